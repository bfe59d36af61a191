"""Charts going up and down: stored, acknowledged, shared within a catchment, kept out of
others, and a damaged chart quarantined without holding up the rest."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from care_record import Chart
from care_record.sync import DocHeads, DocUpdate, SyncResponse, decode_frame, encode_frame
from care_record.sync.documents import changes_since


def test_health(client: Any) -> None:
    answer = client.get("/health")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


def test_uploaded_charts_are_stored_and_acknowledged(
    tablet: Any, hub_db: Callable[..., list[tuple[Any, ...]]]
) -> None:
    first = tablet.new_chart()
    second = tablet.new_chart(given="Neema")
    outcome, response = tablet.exchange(tablet.request())
    assert sorted(response.applied) == [0, 1]
    assert outcome.acked == 2
    stored = dict(hub_db("SELECT id, village_key FROM charts"))
    assert stored == {first.id: "kijiji cha mlima", second.id: "kijiji cha mlima"}
    # The hub's copy is the tablet's chart, byte for byte in content.
    data = hub_db("SELECT data FROM charts WHERE id = ?", [first.id])[0][0]
    assert Chart.load(data, author="test", clock=tablet.clock).view() == first.view()
    # Acknowledged: nothing left to send, and the hub sends nothing back.
    again, response = tablet.exchange(tablet.request())
    assert again.sent == 0
    assert response.updates == []
    assert response.snapshots == []


def test_an_edit_travels_as_changes_only(tablet: Any, make_tablet: Any) -> None:
    chart = tablet.new_chart()
    tablet.sync()
    edited = tablet.chart(chart.id)
    edited.set_pregnancy_status("pregnant")
    tablet.store(edited)
    request = tablet.request()
    assert [len(u.changes) for u in request.updates] == [1]
    _, response = tablet.exchange(request)
    assert response.applied == [0]
    colleague = make_tablet("amina")
    colleague.sync_until_done()
    assert colleague.chart(chart.id).view().fields["pregnancy_status"] == "pregnant"


def test_two_tablets_of_one_catchment_see_each_others_charts(make_tablet: Any) -> None:
    amina = make_tablet("amina", "Kijiji cha Mlima")
    neighbour = make_tablet("baraka", "Kijiji cha Mlima")
    chart = amina.new_chart()
    amina.sync()
    neighbour.sync_until_done()
    assert chart.id in neighbour.holds()
    # The neighbour edits; the change comes back down to amina as an update, not a snapshot.
    copy = neighbour.chart(chart.id)
    copy.set_consent("sms_reminders", "granted")
    neighbour.store(copy)
    neighbour.sync()
    amina.sync()
    assert amina.last is not None
    assert [u.doc for u in amina.last.updates] == [chart.id]
    assert amina.last.snapshots == []
    assert amina.chart(chart.id).view().fields["consent.sms_reminders"] == "granted"


def test_village_names_match_without_case_or_accents(make_tablet: Any) -> None:
    amina = make_tablet("amina", "Kíjiji  CHA mlima")
    other = make_tablet("baraka", "kijiji cha mlima")
    chart = amina.new_chart(village="KIJIJI cha Mlíma")
    amina.sync()
    other.sync()
    assert chart.id in other.holds()


def test_a_tablet_receives_nothing_outside_its_catchment(make_tablet: Any) -> None:
    amina = make_tablet("amina", "Kijiji cha Mlima")
    far = make_tablet("baraka", "Mto wa Mbu")
    amina.new_chart()
    amina.sync()
    far.sync()
    assert far.holds() == set()
    assert far.last is not None
    assert far.last.remaining == 0


def test_a_forged_update_to_a_chart_never_had_is_refused_and_not_written(
    make_tablet: Any, hub_db: Callable[..., list[tuple[Any, ...]]]
) -> None:
    amina = make_tablet("amina", "Kijiji cha Mlima")
    far = make_tablet("baraka", "Mto wa Mbu")
    chart = amina.new_chart()
    amina.sync()
    before = hub_db("SELECT data, heads FROM charts WHERE id = ?", [chart.id])
    # baraka's tablet somehow holds a copy and pushes an edit to it.
    stolen = chart.fork(author="baraka")
    stolen.update_demographics({"phone": "+255700000000"})
    forged = DocUpdate(chart.id, "patient", changes_since(stolen.document, chart.heads))
    # ... first claiming, by a forged acknowledgement, that it holds the chart.
    forged_ack = far.request()
    forged_ack.acks = [DocHeads(chart.id, chart.heads)]
    far.exchange(forged_ack)
    request = far.request()
    request.updates = [forged]
    _, response = far.exchange(request)
    assert response.applied == []
    assert [(n.doc, n.code) for n in response.quarantined] == [(chart.id, "refused")]
    assert hub_db("SELECT data, heads FROM charts WHERE id = ?", [chart.id]) == before
    assert hub_db("SELECT count(*) FROM device_docs WHERE device = ?", [far.device_id]) == [(0,)]
    assert far.holds() == set()


def test_a_damaged_change_is_quarantined_and_the_rest_applied(
    tablet: Any, hub_cli: Any, rows: Callable[[], dict[str, int]]
) -> None:
    good = [tablet.new_chart(), tablet.new_chart(given="Neema")]
    damaged = Chart.new_patient(
        {"given": "X", "family": "Y", "sex": "male", "birth_date": "2000-01-01"},
        author="amina",
        clock=tablet.clock,
    )
    raw = bytearray(changes_since(damaged.document, [])[0])
    raw[len(raw) // 2] ^= 0xFF
    request = tablet.request()
    request.updates.insert(1, DocUpdate(damaged.id, "patient", [bytes(raw)]))
    _, response = tablet.exchange(request)
    assert sorted(response.applied) == [0, 2]
    assert [(n.doc, n.code) for n in response.quarantined] == [(damaged.id, "quarantined")]
    counts = rows()
    assert counts["charts"] == 2
    assert counts["quarantine"] == 1
    # Sent again, the same payload is counted, not stored twice.
    tablet.exchange(request)
    assert rows()["quarantine"] == 1
    listing = hub_cli("quarantine")
    assert listing.code == 0
    assert damaged.id in listing.out
    assert "2 times" in listing.out
    assert "bad checksum" in listing.out
    assert {c.id for c in good} <= set(tablet.holds())


def test_a_household_and_its_patients_go_to_the_household_catchment(
    make_tablet: Any, hub_cli: Any
) -> None:
    amina = make_tablet("amina", "Kijiji cha Mlima")
    household = amina.new_household("Kijiji cha Mlima")
    patient = amina.new_chart(household_id=household.id)
    amina.sync()
    hub_cli.ok("catchment", "--chw", "zawadi", "--add-household", household.id)
    zawadi = make_tablet("zawadi")
    _, response = zawadi.exchange(zawadi.request())
    # Households come before patients, so a tablet can file patients as they arrive.
    assert [s.doc for s in response.snapshots] == [household.id, patient.id]
    # The household assignment wins over the village: amina's tablet must let them go.
    amina.sync_until_done()
    assert amina.holds() == set()


def test_new_charts_arrive_in_pages_with_a_count_of_what_remains(
    make_tablet: Any, tablet: Any
) -> None:
    made = [tablet.new_chart(given=f"Mtoto{i}") for i in range(6)]
    tablet.sync()
    size = len(made[0].save())
    newcomer = make_tablet("amina")
    request = newcomer.request()
    request.max_snapshot_bytes = size * 2 + 10
    outcome, response = newcomer.exchange(request)
    assert len(response.snapshots) == 2
    assert response.remaining == 4
    assert outcome.more
    newcomer.sync_until_done()
    assert newcomer.holds() == {c.id for c in made}


def test_a_response_is_a_frame_the_tablet_can_decode(tablet: Any) -> None:
    tablet.new_chart()
    answer = tablet.post(encode_frame(tablet.request()))
    decoded = decode_frame(answer.content, SyncResponse)
    assert decoded.server_time.startswith("2025-03-01T08:30:00")
