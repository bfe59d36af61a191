"""A tablet's life cycle: revoked tablets are told to erase themselves, retiring ones push what
they hold and are then told they are retired."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from care_record.sync import encode_frame


def _error(answer: Any) -> dict[str, Any]:
    body = answer.json()
    assert set(body) == {"error", "detail", "server_time", "command"}
    return dict(body)


def test_a_revoked_tablet_is_told_to_erase_itself(
    tablet: Any, hub_cli: Any, rows: Callable[[], dict[str, int]]
) -> None:
    tablet.new_chart()
    tablet.sync()
    assert "(not told yet)" not in hub_cli.ok("devices")
    revoked = hub_cli("revoke", tablet.device_id)
    assert revoked.code == 0, revoked.err
    assert "erase itself at its next contact" in revoked.out
    assert "(not told yet)" in hub_cli.ok("devices")

    tablet.new_chart(given="Neema")
    before = rows()
    body = encode_frame(tablet.request())
    answer = tablet.post(body)
    assert answer.status_code == 403
    refusal = _error(answer)
    assert refusal["error"] == "revoked"
    assert refusal["command"] == "erase"
    assert rows() == before  # its new chart was not taken in
    # Even with its clock wrong it hears it: the signature is what counts.
    late = tablet.headers(body, time=int(tablet.clock.now().timestamp()) - 3600)
    assert _error(tablet.post(body, late))["command"] == "erase"
    assert "(told to erase at 2025-03-01T08:30:00+00:00)" in hub_cli.ok("devices")


def test_a_retiring_tablet_pushes_what_it_holds_then_is_retired(
    make_tablet: Any, hub_cli: Any, hub_db: Callable[..., list[tuple[Any, ...]]]
) -> None:
    leaving = make_tablet("amina")
    colleague = make_tablet("amina")
    theirs = colleague.new_chart(given="Neema")
    colleague.sync()
    mine = [leaving.new_chart(), leaving.new_chart(given="Baraka")]
    hub_cli.ok("retire", leaving.device_id)

    outcome, response = leaving.exchange(leaving.request())
    assert sorted(response.applied) == [0, 1]
    # Nothing comes down to a retiring tablet, not even its catchment's new charts.
    assert response.snapshots == []
    assert response.updates == []
    assert response.command == "retired"
    assert outcome.command == "retired"
    assert theirs.id not in leaving.holds()
    stored = {row[0] for row in hub_db("SELECT id FROM charts")}
    assert {c.id for c in mine} <= stored
    assert hub_db("SELECT state FROM devices WHERE id = ?", [leaving.device_id]) == [("retired",)]

    answer = leaving.post(encode_frame(leaving.request()))
    assert answer.status_code == 403
    refusal = _error(answer)
    assert refusal["error"] == "retired"
    assert refusal["command"] == "retired"
    # What it pushed reaches its colleague.
    colleague.sync_until_done()
    assert {c.id for c in mine} <= colleague.holds()


def test_a_retiring_tablet_with_a_chart_being_reconciled_is_not_retired_yet(
    tablet: Any, hub_cli: Any
) -> None:
    chart = tablet.new_chart()
    tablet.sync()
    hub_cli.ok("retire", tablet.device_id)
    # The tablet remembers heads the hub does not have (the hub was restored from a backup).
    edited = tablet.chart(chart.id)
    edited.set_pregnancy_status("pregnant")
    first = edited.fork(author="amina")
    first.set_pregnancy_status("not_pregnant")
    tablet.store(first)
    tablet.replica.set_peer_heads("hub", chart.id, edited.heads)
    _, response = tablet.exchange(tablet.request())
    assert response.resync == [chart.id]
    assert response.command is None
    outcomes = tablet.sync_until_done()
    assert outcomes[-1].command == "retired"


def test_device_commands_refuse_what_makes_no_sense(tablet: Any, hub_cli: Any) -> None:
    unknown = hub_cli("revoke", "01954f00-b000-7000-8000-000000000000")
    assert unknown.code == 1
    assert "not enrolled" in unknown.err
    hub_cli.ok("retire", tablet.device_id)
    again = hub_cli("retire", tablet.device_id)
    assert again.code == 1
    assert "already retiring" in again.err
    hub_cli.ok("revoke", tablet.device_id)
    after = hub_cli("retire", tablet.device_id)
    assert after.code == 1
    assert "revoked" in after.err


def test_devices_lists_state_and_last_contact(tablet: Any, hub_cli: Any) -> None:
    listing = hub_cli("devices")
    assert (
        f"{tablet.device_id}  amina  amina  active since 2025-03-01T08:30:00+00:00" in listing.out
    )
    assert "last seen never" in listing.out
    tablet.sync()
    assert "last seen 2025-03-01T08:30:00+00:00" in hub_cli.ok("devices")
    assert "1 devices" in hub_cli("devices").err
