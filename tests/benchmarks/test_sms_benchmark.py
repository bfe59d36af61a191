"""The SMS benchmark as a smoke test: a real central process taking the status callbacks of a
real local Twilio process, the reminder service planning and sending from this one, at the
quick size (300 reminders).

No timing is asserted here: a benchmark reports numbers, a test checks that it can, and that
the numbers are the kind they claim to be (every reminder planned once, sent once, delivered).
"""

from __future__ import annotations

import pytest

from tests.benchmarks.quick import Run, run_quick

REMINDERS = 300

GOALS = {
    "planned_per_s": ">= 5000",
    "sent_per_s": ">= 100",
    "duplicates": "<= 0",
    "dropped": "<= 0",
}
FIGURES = (
    *GOALS,
    "rows",
    "rate_limit_per_s",
    "settle_seconds",
    "twilio_client_only_per_s",
    "dispatch_cpu_ms_per_send",
    "twilio_client_cpu_ms_per_send",
    "callbacks_per_s",
)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return run_quick("sms", tmp_path_factory.mktemp("bench"), timeout=120)


def test_every_figure_of_the_issue_is_written_as_one_flat_object(quick_run: Run) -> None:
    _, figures = quick_run
    for name in FIGURES:
        assert isinstance(figures[name], int | float), name
    assert all(isinstance(v, int | float) for v in figures.values())


def test_every_reminder_was_planned_sent_and_delivered_once(quick_run: Run) -> None:
    _, f = quick_run
    assert f["rows"] == REMINDERS
    assert f["sent"] == f["delivered"] == f["messages_at_twilio"] == REMINDERS
    assert f["duplicates"] == f["dropped"] == 0
    assert f["not_delivered"] == f["never_at_twilio"] == 0
    assert f["send_retries"] == f["send_failures"] == 0
    # Each message's two status callbacks (sent, delivered) reached central and were answered.
    assert f["callbacks"] == 2 * REMINDERS
    assert f["callback_errors"] == 0


def test_the_figures_are_sane(quick_run: Run) -> None:
    _, f = quick_run
    assert f["rate_limit_per_s"] == 200
    assert f["central_workers"] == 2
    assert f["planned_per_s"] == pytest.approx(f["rows"] / f["plan_seconds"])
    assert f["sent_per_s"] == pytest.approx(f["sent"] / f["dispatch_seconds"])
    # The token bucket starts with one second's worth; after that the rate limit holds.
    rate = f["rate_limit_per_s"]
    assert f["sent_per_s"] <= rate * (f["dispatch_seconds"] + 1) / f["dispatch_seconds"] + 1
    assert 0 <= f["settle_seconds"] < 60
    assert f["twilio_client_only_per_s"] > 0
    assert 0 < f["twilio_client_cpu_ms_per_send"] < 1000
    assert 0 < f["dispatch_cpu_ms_per_send"] < 1000
    ratio = f["dispatch_cpu_ms_per_send"] / f["twilio_client_cpu_ms_per_send"]
    assert f["dispatch_cpu_over_client_only"] == pytest.approx(ratio)
    # Central's processes did the callbacks' work; the local Twilio sent them.
    assert f["central_cpu_ms_per_reminder"] > 0
    assert f["twilio_cpu_ms_per_reminder"] > 0
    assert 0 < f["setup_seconds"] < f["run_seconds"]


def test_the_table_shows_each_goal_with_its_verdict_and_progress_goes_to_stderr(
    quick_run: Run,
) -> None:
    done, _ = quick_run
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip()}
    for name, goal in GOALS.items():
        assert goal in rows[name], name
        assert rows[name].rstrip().endswith(("PASS", "MISS")), name
    assert "sms: 300 reminders planned in" in done.stderr
    assert "sms: 300 reminders final" in done.stderr
    assert "sms: planning" not in done.stdout
