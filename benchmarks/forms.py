"""``python -m benchmarks forms``: the forms engine as a CHW feels it, answer by answer and
visit by visit.

The form is chosen at run time from the shipped content: the one with the most items, since
every answer re-evaluates its enableWhen, calculations and rules. Two phases:

- Answering: many fillings of that form for synthetic patients. Each filling answers the
  enabled questions in a random order with values drawn from the form's own options and
  limits, and now and then goes back to change an earlier answer (a change of mind), as a CHW
  does when the patient corrects herself. Every single ``FormState.answer`` call is timed
  alone with ``perf_counter_ns``; the figures are the median and the 95th percentile.
- Visits: a real encrypted store (``field_app.session.init_store``, at a low scrypt cost so
  that the set-up is quick; scrypt is not what is measured) is filled with patients first.
  Then, for each visit, a complete set of answers is prepared untimed, and what the tablet
  does when the CHW presses "save" is timed as one: ``start_form`` (reads the chart),
  ``answer_all`` and ``write_form_visit`` (``complete``, then the encounter, referral and
  tasks in one transaction). The figure is the median.

The largest form that records visits is used for the second phase; today it is the same form.
"""

from __future__ import annotations

import dataclasses
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from benchmarks import population
from benchmarks.report import Figure, Goal, Progress, Report, median_ms, p95_ms
from care_record import SystemClock
from field_app.errors import FormIncomplete
from field_app.forms import Form, FormLibrary, FormState, Item, Quantity
from field_app.patients import register_patient
from field_app.session import init_store
from field_app.settings import Settings
from field_app.store import Store
from field_app.visits import start_form, write_form_visit

SEED = 20251121
USER = "chw1"
PIN = "kahawa-2718"
ZONE = "Africa/Dar_es_Salaam"
LANGUAGE = "sw"
# Low enough that the store opens at once; the unlock is the store benchmark's business.
FAST_SCRYPT = 12
CHANGE_OF_MIND = 0.12
PHONE = "+255712345678"
WORDS = ("amefika", "homa kidogo", "anaendelea vizuri", "ameelewa", "Kijiji cha Mlima")


@dataclass(frozen=True)
class Size:
    answer_updates: int
    visits: int
    patients: int


FULL = Size(answer_updates=3000, visits=300, patients=2000)
QUICK = Size(answer_updates=200, visits=10, patients=30)


@dataclass
class Timings:
    answer: list[int] = field(default_factory=list)
    visit: list[int] = field(default_factory=list)
    fillings: int = 0
    referrals: int = 0
    tasks: int = 0


def run(*, quick: bool, progress: Progress) -> Report:
    size = QUICK if quick else FULL
    rnd = random.Random(SEED)
    library = FormLibrary()
    largest = _largest(library, lambda _form: True)
    visit_form = _largest(library, lambda form: form.rules.record == "visit")
    timings = Timings()
    progress(f"forms: {largest.name} has {len(largest.questionnaire.items)} items, timing answers")
    time_answers(largest, size.answer_updates, rnd, timings, progress)
    with tempfile.TemporaryDirectory(prefix="bench-forms-") as tmp:
        settings = dataclasses.replace(
            Settings(data_dir=Path(tmp) / "tablet", zone=ZONE), scrypt_log2_n=FAST_SCRYPT
        )
        time_visits(
            settings,
            library=library,
            form=visit_form,
            size=size,
            rnd=rnd,
            timings=timings,
            progress=progress,
        )
    return report(size, largest, visit_form, timings)


def _largest(library: FormLibrary, keep: Callable[[Form], bool]) -> Form:
    forms = [library.get(name) for name in library.names()]
    chosen = [f for f in forms if keep(f)]
    if not chosen:
        raise RuntimeError("no shipped form to benchmark")
    return max(chosen, key=lambda f: (len(f.questionnaire.items), f.name))


# -- realistic answers ------------------------------------------------------------------------


def answerable(form: Form) -> list[Item]:
    return [
        i
        for i in form.questionnaire.items.values()
        if i.is_question and not i.read_only and not i.calculated
    ]


def realistic(item: Item, rnd: random.Random, today: date) -> object:
    """A value a CHW could enter: one of the item's options, or a number or date inside its
    limits (with the quantity sometimes in its second unit)."""
    match item.type:
        case "boolean":
            return rnd.random() < 0.3
        case "choice":
            codes = [o.code for o in item.options]
            if item.repeats:
                return rnd.sample(codes, rnd.randint(1, min(3, len(codes))))
            return rnd.choice(codes)
        case "integer":
            low, high = _bounds(item, 0, 100)
            return rnd.randint(int(low), int(high))
        case "decimal":
            low, high = _bounds(item, 0.0, 100.0)
            return round(rnd.uniform(low, high), 1)
        case "quantity":
            low, high = _bounds(item, 1.0, 100.0)
            return Quantity(round(rnd.uniform(low, high), 1), item.units[0].code)
        case "date":
            return _day_between(item, today - timedelta(days=300), today, rnd)
        case _:
            fits = item.max_length is None or item.max_length >= len(PHONE)
            return PHONE if "phone" in item.link_id and fits else rnd.choice(WORDS)


def _day_between(item: Item, first: date, last: date, rnd: random.Random) -> date:
    first = item.min_value if isinstance(item.min_value, date) else first
    last = item.max_value if isinstance(item.max_value, date) else last
    return first + timedelta(days=rnd.randrange(max((last - first).days, 0) + 1))


def _bounds(item: Item, low: float, high: float) -> tuple[float, float]:
    found_low = item.min_value if isinstance(item.min_value, int | float) else low
    found_high = item.max_value if isinstance(item.max_value, int | float) else found_low + high
    return found_low, found_high


def fill(state: FormState, rnd: random.Random, answer: Callable[[str, object], None]) -> None:
    """Answer every enabled question once, in a random order, with some changes of mind; then
    answer again what the form still calls missing or invalid."""
    questions = answerable(state.form)
    answered: list[Item] = []
    pending = [q for q in questions if state.is_enabled(q.link_id)]
    while pending:
        item = rnd.choice(pending)
        answer(item.link_id, realistic(item, rnd, state.today))
        answered.append(item)
        if rnd.random() < CHANGE_OF_MIND:
            again = rnd.choice(answered)
            if state.is_enabled(again.link_id):
                answer(again.link_id, realistic(again, rnd, state.today))
        done = {a.link_id for a in answered}
        pending = [q for q in questions if state.is_enabled(q.link_id) and q.link_id not in done]
    for _ in range(5):
        for link_id in (*state.missing, *state.errors):
            answer(link_id, realistic(state.form.questionnaire.items[link_id], rnd, state.today))


def patient_facts(who: population.Person) -> dict[str, str]:
    return {k: who.demographics[k] for k in ("birth_date", "sex")}


# -- phase 1: every answer ---------------------------------------------------------------------


def time_answers(
    form: Form, updates: int, rnd: random.Random, timings: Timings, progress: Progress
) -> None:
    today = population.REFERENCE_DAY
    started = time.perf_counter()
    while len(timings.answer) < updates:
        who = population.person(rnd)
        state = FormState(form, today=today, patient=patient_facts(who), language=LANGUAGE)

        def timed(link_id: str, value: object, state: FormState = state) -> None:
            began = time.perf_counter_ns()
            state.answer(link_id, value)
            timings.answer.append(time.perf_counter_ns() - began)

        fill(state, rnd, timed)
        timings.fillings += 1
        if timings.fillings % 25 == 0:
            progress(f"forms: {len(timings.answer):,} / {updates:,} answers timed")
    elapsed = time.perf_counter() - started
    progress(
        f"forms: {len(timings.answer):,} answers in {timings.fillings} fillings: done in {elapsed:.1f} s"
    )


# -- phase 2: whole visits into a real store ----------------------------------------------------


def time_visits(
    settings: Settings,
    *,
    library: FormLibrary,
    form: Form,
    size: Size,
    rnd: random.Random,
    timings: Timings,
    progress: Progress,
) -> None:
    clock = SystemClock()
    session = init_store(settings, clock, USER, PIN)
    try:
        # Held directly: the session's idle lock would end a long run half-way.
        store = session.store
        people = population.people(rnd, size.patients)
        progress(f"forms: registering {size.patients:,} patients in an encrypted store")
        ids = [register_patient(store, who.demographics) for who in people]
        started = time.perf_counter()
        for n in range(size.visits):
            index = rnd.randrange(len(people))
            answers = complete_answers(form, people[index], clock.now().date(), rnd)
            elapsed_ns, visit_tasks, referred = _one_visit(
                store, library, form, ids[index], answers
            )
            timings.visit.append(elapsed_ns)
            timings.tasks += visit_tasks
            timings.referrals += referred
            if (n + 1) % max(1, size.visits // 10) == 0 and n + 1 < size.visits:
                progress(f"forms: {n + 1:,} / {size.visits:,} visits recorded")
        elapsed = time.perf_counter() - started
        progress(f"forms: recording {size.visits:,} {form.name} visits: done in {elapsed:.1f} s")
    finally:
        session.lock()


def complete_answers(
    form: Form, who: population.Person, today: date, rnd: random.Random
) -> dict[str, object]:
    """Answers that complete the form for this patient (prepared untimed)."""
    for _ in range(20):
        state = FormState(form, today=today, patient=patient_facts(who), language=LANGUAGE)
        fill(state, rnd, state.answer)
        try:
            state.complete()
        except FormIncomplete:
            continue
        return {
            q.link_id: state.given(q.link_id) for q in answerable(form) if state.value(q.link_id)
        }
    raise RuntimeError(f"could not fill the form {form.name} to completion")


def _one_visit(
    store: Store, library: FormLibrary, form: Form, patient_id: str, answers: dict[str, object]
) -> tuple[int, int, int]:
    began = time.perf_counter_ns()
    state = start_form(store, library, patient_id, form.name, language=LANGUAGE, zone=ZONE)
    state.answer_all(answers)
    visit = write_form_visit(store, patient_id, state, zone=ZONE)
    elapsed = time.perf_counter_ns() - began
    return elapsed, len(visit.tasks), int(visit.referral is not None)


# -- the report -----------------------------------------------------------------------------


def report(size: Size, largest: Form, visit_form: Form, timings: Timings) -> Report:
    title = (
        f"forms: {len(timings.answer):,} answers to {largest.name} in {timings.fillings} fillings;"
        f" {size.visits:,} {visit_form.name} visits over {size.patients:,} patients, encrypted"
    )
    figures = (
        Figure("answer_update_ms_p95", p95_ms(timings.answer), "ms", Goal(5)),
        Figure("complete_visit_ms_median", median_ms(timings.visit), "ms", Goal(20)),
        Figure("answer_update_ms_median", median_ms(timings.answer), "ms"),
        Figure("answer_update_ms_max", max(timings.answer) / 1e6, "ms"),
        Figure("complete_visit_ms_p95", p95_ms(timings.visit), "ms"),
        Figure("form_items", len(largest.questionnaire.items), "count"),
        Figure("form_rules", len(largest.rules.rules), "count"),
        Figure("answer_updates", len(timings.answer), "count"),
        Figure("fillings", timings.fillings, "count"),
        Figure("visits", len(timings.visit), "count"),
        Figure("visits_referred", timings.referrals, "count"),
        Figure("tasks_planned", timings.tasks, "count"),
        Figure("patients", size.patients, "count"),
    )
    return Report(title, figures)
