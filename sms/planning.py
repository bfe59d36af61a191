"""The planning pass: from the reminder resources that changed, to rows in the outbox.

The pass reads changes in lastUpdated order from where the last pass stopped, less an overlap
(two transactions can commit in the other order than their lastUpdated says), decides each of
the changed patients' reminders again with ``sms.planner`` and records the decisions. Deciding
again what was decided before changes nothing, so the overlap costs a little work, never a
second message.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sms import fhir, outbox, planner, templates
from sms.config import SmsConfig
from sms.database import Database, Session
from sms.model import Recipient, Reminder, Send
from sms.outbox import PlanCounts, Planned
from sms.records import PatientRecords, Position, Records, Resource

log = logging.getLogger(__name__)

OVERLAP = timedelta(minutes=5)
CURSOR = "plan"


@dataclass
class PlanReport:
    patients: int = 0
    reminders: int = 0
    counts: PlanCounts | None = None


def plan_changes(
    database: Database,
    records: Records,
    config: SmsConfig,
    now: datetime,
    *,
    page_size: int = 500,
) -> PlanReport:
    """One planning pass, a page of changes per transaction."""
    report = PlanReport(counts=PlanCounts())
    with database.read() as session:
        after = _start(outbox.cursor(session, CURSOR))
    while True:
        with database.write() as session:
            patient_ids, reached = records.changes(session, after, page_size)
            if reached is None:
                return report
            counts = plan_patients(session, records, patient_ids, config, now)
            outbox.set_cursor(session, CURSOR, json.dumps(reached))
        after = reached
        report.patients += len(patient_ids)
        _add(report, counts)


def plan_patients(
    session: Session,
    records: Records,
    patient_ids: Sequence[str],
    config: SmsConfig,
    now: datetime,
) -> PlanCounts:
    """Decide every reminder of these patients again and record the decisions."""
    found = [
        (one, fhir.recipient_from(one.patient))
        for one in records.patient_records(session, patient_ids)
        if one.patient is not None
    ]
    opted = outbox.opted_out(session, [recipient.phone or "" for _, recipient in found])
    plans = [
        plan
        for one, recipient in found
        for plan in plans_for(one, recipient, recipient.phone in opted, config, now)
    ]
    return outbox.record_plans(session, plans, now)


def plans_for(
    one: PatientRecords, recipient: Recipient, opted_out: bool, config: SmsConfig, now: datetime
) -> list[Planned]:
    """The decision for each reminder of one patient (``recipient``, from their Patient)."""
    dues = {task.get("id"): fhir.task_due(task) for task in one.tasks}
    reminders = [r for r in (_reminder(request, dues) for request in one.requests) if r]
    reminders += [
        missed
        for task in one.tasks
        if (missed := fhir.missed_visit_from(task, one.requests)) is not None
    ]
    if not reminders:
        return []
    consents = fhir.consents_from(one.consents)
    zone = planner.zone_of(recipient.zone, config.policy)
    plans = []
    for reminder in reminders:
        decision = planner.decide(
            reminder, recipient, consents, opted_out=opted_out, policy=config.policy, now=now
        )
        if isinstance(decision, Send):
            body = _words(reminder, decision, recipient.first_name, recipient.facility)
            plans.append(
                Planned(
                    reminder.id,
                    reminder.patient_id,
                    reminder.template,
                    decision,
                    zone,
                    body,
                    based_on=reminder.based_on,
                )
            )
        else:
            plans.append(
                Planned(
                    reminder.id,
                    reminder.patient_id,
                    reminder.template,
                    None,
                    zone,
                    reason=decision.reason,
                    based_on=reminder.based_on,
                )
            )
    return plans


def _reminder(resource: Resource, dues: Mapping[object, date | None]) -> Reminder | None:
    """The reminder a CommunicationRequest asks for, with the day its follow-up is due; None
    (and a log line naming it) for one that cannot be read, so it does not hold up the rest."""
    try:
        found = fhir.reminder_from(resource)
    except ValueError as exc:
        log.warning("CommunicationRequest/%s cannot be planned: %s", resource.get("id"), exc)
        return None
    if found is None:
        return None
    task_id = fhir.based_on_task(resource)
    return dataclasses.replace(found, task_id=task_id, due=dues.get(task_id))


def _words(reminder: Reminder, send: Send, first_name: str | None, facility: str | None) -> str:
    render = templates.render_sms if send.channel == "sms" else templates.render_voice
    return render(
        reminder.template,
        send.language,
        first_name=first_name,
        facility=facility,
        # The day the patient should come: the follow-up's, else the day of the reminder.
        day=reminder.due or reminder.send_on,
    )


def _start(saved: str | None) -> Position | None:
    if saved is None:
        return None
    instant, _type, _id = json.loads(saved)
    moment = datetime.fromisoformat(instant.replace("Z", "+00:00")) - OVERLAP
    return (moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "", "")


def _add(report: PlanReport, counts: PlanCounts) -> None:
    total = report.counts or PlanCounts()
    total.planned += counts.planned
    total.updated += counts.updated
    total.cancelled += counts.cancelled
    total.unchanged += counts.unchanged
    report.counts = total
    report.reminders += counts.planned + counts.updated + counts.cancelled + counts.unchanged
