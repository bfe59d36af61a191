"""Requests a hub must refuse, and devices it must stop, against a real hub process.

Signed requests are built from a real tablet's store (``care_record.sync.build_request``) and
signed by the tablet's own ``DeviceSigner``, then sent, replayed, reordered, cut or forged with
plain httpx. "Nothing written" compares the rows of the hub's tables before and after.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import automerge.core as am
import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from benchmarks.linkemu import Link, LinkEmulator
from care_record import SystemClock
from care_record.sync import (
    DocHeads,
    DocSync,
    DocUpdate,
    Session,
    SyncRequest,
    SyncResponse,
    build_request,
    changes_since,
    decode_frame,
    encode_frame,
    split_heads,
)
from field_app.replica import StoreReplica
from field_app.syncing import FRAME_TYPE, DeviceSigner, Identity

if TYPE_CHECKING:
    from tests.integration.conftest import HubProcess, Tablet, World

ALPHA, BETA = "Alpha", "Beta"
# Every table a sync request may write, devices included (its last contact).
ALL_WRITTEN = ("charts", "device_docs", "offers", "nonces", "quarantine", "exchanges", "devices")


def _request_from(tablet: Tablet) -> tuple[SyncRequest, bytes]:
    """What the tablet's next sync would send, as a frame."""
    replica = StoreReplica(tablet.store, initiator=True)
    with tablet.store.transaction():
        request = build_request(replica, Session("hub"), max_snapshot_bytes=1 << 20)
    return request, encode_frame(request)


def _post(hub: HubProcess, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{hub.url}/sync", content=body, headers=headers, timeout=30)


def _response(answer: httpx.Response) -> SyncResponse:
    assert answer.status_code == 200, answer.text
    return decode_frame(answer.content, SyncResponse)


def _error(answer: httpx.Response) -> dict[str, Any]:
    body = answer.json()
    assert isinstance(body, dict)
    assert set(body) == {"error", "detail", "server_time", "command"}
    return body


def _signed_by(device_id: str, key: Ed25519PrivateKey, body: bytes) -> dict[str, str]:
    """Headers signed as ``device_id`` with ``key`` (which may not be that device's key)."""
    signer = DeviceSigner(Identity(device_id, "", "", key), SystemClock())
    return {"Content-Type": FRAME_TYPE, **signer.headers("POST", "/sync", body)}


# -- replayed, reordered, cut, forged -----------------------------------------------------------


def test_a_replayed_request_is_refused_and_nothing_is_written_twice(world: World) -> None:
    tablet = world.tablet("amina", ALPHA)
    chart = tablet.new_patient(ALPHA)
    tablet.visit(chart)
    _, body = _request_from(tablet)
    headers = tablet.identity_headers(body)

    first = _post(world.hub, body, headers)
    assert _response(first).applied == [0]
    after_first = world.hub.tables(*ALL_WRITTEN)

    again = _post(world.hub, body, headers)
    assert again.status_code == 409
    assert _error(again)["error"] == "replayed"
    assert world.hub.tables(*ALL_WRITTEN) == after_first
    assert world.hub.encounters() == world.ledger.expected()

    # The tablet never heard the first answer: its own sync sends the same changes again,
    # and they are held once.
    report = tablet.sync()
    assert report.round_trips == 1
    world.assert_converged()


def test_requests_sent_in_the_wrong_order_are_both_taken_and_end_right(world: World) -> None:
    tablet = world.tablet("amina", ALPHA)
    chart = tablet.new_patient(ALPHA)
    tablet.sync()

    # R1 carries the first visit; R2 carries only the second, which builds on the first.
    tablet.visit(chart, systolic=141)
    heads_one = split_heads(tablet.heads()[chart])
    _, first_body = _request_from(tablet)
    tablet.visit(chart, systolic=152)
    kind, data, _ = tablet.store.get_document(chart) or ("", b"", b"")
    later = changes_since(am.Document.load(data), heads_one)
    second_body = encode_frame(SyncRequest(updates=[DocUpdate(chart, kind, later)]))
    # Both signed now, both fresh; the second arrives first.
    first_headers = tablet.identity_headers(first_body)
    second_headers = tablet.identity_headers(second_body)

    second = _response(_post(world.hub, second_body, second_headers))
    assert second.applied == []
    assert second.resync == [chart], "changes without their history are not taken as held"
    first = _response(_post(world.hub, first_body, first_headers))
    assert first.applied == [0]
    held = world.hub.encounters()[chart]
    assert len(held) == 1
    assert set(held) < world.ledger.visits[chart]

    # The tablet's own sync settles it: both visits at the hub, once each.
    tablet.sync()
    world.assert_converged()

    # Two independent requests (two charts) in the opposite order: both applied.
    other = tablet.new_patient(ALPHA)
    tablet.visit(chart)
    bodies = []
    for only in (chart, other):
        request, _ = _request_from(tablet)
        mine = [u for u in request.updates if u.doc == only]
        bodies.append(encode_frame(SyncRequest(updates=mine)))
    signed = [tablet.identity_headers(b) for b in bodies]
    for body, headers in reversed(list(zip(bodies, signed, strict=True))):
        assert _response(_post(world.hub, body, headers)).applied == [0]
    tablet.sync()
    world.assert_converged()


def test_a_body_cut_short_under_the_full_bodys_signature_is_refused(world: World) -> None:
    tablet = world.tablet("amina", ALPHA)
    tablet.visit(tablet.new_patient(ALPHA))
    _, body = _request_from(tablet)
    headers = tablet.identity_headers(body)
    before = world.hub.tables(*ALL_WRITTEN)

    answer = _post(world.hub, body[: len(body) // 2], headers)
    assert answer.status_code == 401
    assert _error(answer)["error"] == "bad_signature"
    assert world.hub.tables(*ALL_WRITTEN) == before
    assert world.hub.chart_heads() == {}


def test_a_body_cut_short_and_signed_again_is_a_malformed_frame(world: World) -> None:
    tablet = world.tablet("amina", ALPHA)
    tablet.visit(tablet.new_patient(ALPHA))
    _, body = _request_from(tablet)
    before = world.hub.tables(*ALL_WRITTEN)

    for cut in (len(body) - 1, len(body) // 2, 5):
        short = body[:cut]
        answer = _post(world.hub, short, tablet.identity_headers(short))
        assert answer.status_code == 400, cut
        assert _error(answer)["error"] == "malformed_frame"
    assert world.hub.tables(*ALL_WRITTEN) == before
    assert world.hub.chart_heads() == {}


def test_a_signature_by_another_key_is_refused(world: World) -> None:
    tablet = world.tablet("amina", ALPHA)
    tablet.visit(tablet.new_patient(ALPHA))
    _, body = _request_from(tablet)
    before = world.hub.tables(*ALL_WRITTEN)

    forged = _signed_by(tablet.device_id, Ed25519PrivateKey.generate(), body)
    answer = _post(world.hub, body, forged)
    assert answer.status_code == 401
    assert _error(answer)["error"] == "bad_signature"
    # A good signature on a different body is no better.
    swapped = dict(tablet.identity_headers(encode_frame(SyncRequest())))
    answer = _post(world.hub, body, swapped)
    assert answer.status_code == 401
    assert _error(answer)["error"] == "bad_signature"
    assert world.hub.tables(*ALL_WRITTEN) == before


def test_an_unknown_device_is_refused(world: World) -> None:
    tablet = world.tablet("amina", ALPHA)
    tablet.visit(tablet.new_patient(ALPHA))
    _, body = _request_from(tablet)
    before = world.hub.tables(*ALL_WRITTEN)

    stranger = _signed_by(str(uuid.uuid4()), Ed25519PrivateKey.generate(), body)
    answer = _post(world.hub, body, stranger)
    assert answer.status_code == 401
    assert _error(answer)["error"] == "unknown_device"
    unsigned = {"Content-Type": FRAME_TYPE}
    answer = _post(world.hub, body, unsigned)
    assert answer.status_code == 401
    assert _error(answer)["error"] == "unsigned"
    assert world.hub.tables(*ALL_WRITTEN) == before


# -- catchments -----------------------------------------------------------------------------------


def test_a_device_cannot_write_or_read_a_chart_of_another_catchment(world: World) -> None:
    alpha = world.tablet("amina", ALPHA)
    beta = world.tablet("baraka", BETA)
    target = beta.new_patient(BETA, phone="+255754999888")
    beta.visit(target)
    hidden = beta.new_patient(BETA)
    beta.sync()
    alpha.visit(alpha.new_patient(ALPHA))
    alpha.sync()
    target_heads = world.hub.chart_heads()[target]
    stolen = world.hub.query("SELECT data FROM charts WHERE id = ?", [target])[0][0]

    # A copy of the chart reaches alpha's tablet somehow; its CHW edits it and syncs.
    alpha.store.put_document("patient", bytes(stolen))
    alpha.edit(target, lambda c: c.update_demographics({"phone": "+255700000666"}))
    alpha.visit(target)
    report = alpha.sync()
    assert [(n.doc, n.code) for n in report.quarantined] == [(target, "refused")]
    assert world.hub.chart_heads()[target] == target_heads
    assert not world.hub.query(
        "SELECT 1 FROM device_docs WHERE device = ? AND doc = ?", [alpha.device_id, target]
    )
    assert hidden not in alpha.chart_ids()

    # By hand: a forged acknowledgement (to claim the chart), Automerge's sync protocol from
    # an empty document (which would answer with the whole chart), and the changes again.
    before = world.hub.tables("charts", "device_docs", "offers", "quarantine")
    _, data, _ = alpha.store.get_document(target) or ("", b"", b"")
    doc = am.Document.load(data)
    asking = am.Document().generate_sync_message(am.SyncState())
    assert asking is not None
    request = SyncRequest(
        acks=[DocHeads(target, split_heads(target_heads)), DocHeads(hidden, [])],
        syncs=[DocSync(target, "patient", [asking.encode()])],
        updates=[DocUpdate(hidden, "patient", changes_since(doc, []))],
    )
    body = encode_frame(request)
    answer = _response(_post(world.hub, body, alpha.identity_headers(body)))
    assert {(n.doc, n.code) for n in answer.quarantined} == {
        (target, "refused"),
        (hidden, "refused"),
    }
    assert answer.applied == []
    assert answer.syncs == []
    assert all(s.doc not in (target, hidden) for s in answer.snapshots)
    assert all(u.doc not in (target, hidden) for u in answer.updates)
    assert world.hub.tables("charts", "device_docs", "offers", "quarantine") == before
    # And its own charts still sync as before; beta's never come.
    alpha.sync()
    assert hidden not in alpha.chart_ids()
    assert world.hub.chart_heads()[target] == target_heads


# -- revoked, retired, reassigned ------------------------------------------------------------------


def test_a_revoked_tablet_erases_itself_at_its_next_sync(world: World) -> None:
    tablet = world.tablet("amina", ALPHA)
    tablet.visit(tablet.new_patient(ALPHA))
    tablet.sync()
    folder = tablet.settings.data_dir
    assert (folder / "keys.json").exists()

    said = world.hub.ok("revoke", tablet.device_id)
    assert "revoked" in said
    result = tablet.cli("sync")
    assert result.code == 0, result.err
    assert "the hub has revoked this tablet: this tablet's data has been erased" in result.out
    assert not (folder / "keys.json").exists()
    assert (folder / "erased").exists()
    assert not (folder / "store.db").exists()
    state, told = world.hub.device_state(tablet.device_id)
    assert state == "revoked"
    assert told is not None
    assert "told to erase at" in world.hub.ok("devices")
    # The tablet cannot be opened any more.
    again = tablet.cli("patient", "search", "Zawadi")
    assert again.code == 1
    assert "erased" in again.err


def test_a_retired_tablet_pushes_its_edits_then_erases_and_is_refused(world: World) -> None:
    leaving = world.tablet("amina", ALPHA)
    staying = world.tablet("amina", ALPHA)
    chart = leaving.new_patient(ALPHA)
    leaving.sync()
    staying.sync()
    last_visit = leaving.visit(chart, note="the last visit on this tablet")
    staying.visit(chart)
    staying.sync()
    device, key = leaving.device_id, leaving.key

    assert "retiring" in world.hub.ok("retire", device)
    result = leaving.cli("sync")
    assert result.code == 0, result.err
    # It pushed its visit and was sent nothing back, then erased itself.
    assert "sent 1 charts, received 0 (0 new) in 1 round trip" in result.out
    assert "this tablet was retired" in result.out
    assert "this tablet's data has been erased" in result.out
    assert leaving.erased
    assert last_visit in world.hub.encounters()[chart]
    assert world.hub.device_state(device)[0] == "retired"

    # Anything signed with its key from now on is refused.
    body = encode_frame(SyncRequest())
    answer = _post(world.hub, body, _signed_by(device, key, body))
    assert answer.status_code == 403
    refusal = _error(answer)
    assert (refusal["error"], refusal["command"]) == ("retired", "retired")
    # The other tablet of the same CHW receives the last visit.
    world.tablets.remove(leaving)
    staying.sync()
    world.assert_converged()


def test_a_reassigned_village_leaves_the_old_tablet_after_its_edits_reach_the_new_one(
    world: World,
) -> None:
    old = world.tablet("amina", ALPHA)
    new = world.tablet("baraka", BETA)
    charts = [old.new_patient(ALPHA) for _ in range(2)]
    kept = old.new_patient(BETA + " Juu")  # nobody's village: stays with the tablet that made it
    old.sync()
    new.sync()
    assert not new.chart_ids()
    pending = old.visit(charts[0], note="recorded before the move")

    moved = world.hub.ok("reassign", "--village", ALPHA, "--to-chw", "baraka")
    assert "2 charts" in moved
    result = old.cli("sync")
    assert result.code == 0, result.err
    for chart in charts:
        assert (
            f"removed chart {chart} from this tablet: "
            "this chart was assigned to another health worker's catchment"
        ) in result.out
    assert old.chart_ids() == {kept}
    assert pending in world.hub.encounters()[charts[0]]

    received = new.sync()
    assert received.new == 2
    assert new.chart_ids() == set(charts)
    assert pending in new.encounters()[charts[0]]
    # The old tablet tells the hub it let them go, and never gets them back.
    old.sync()
    again = old.sync()
    assert again.received == 0
    assert old.chart_ids() == {kept}
    assert not world.hub.query(
        "SELECT doc FROM device_docs WHERE device = ? AND doc IN (?, ?)",
        [old.device_id, *charts],
    )
    hub_heads = world.hub.chart_heads()
    assert new.heads() == {c: hub_heads[c] for c in charts}
    assert {c: new.encounters()[c] for c in charts} == world.ledger.expected(set(charts))


def test_a_retiring_tablet_that_loses_its_last_answer_still_erases_itself(world: World) -> None:
    """The answer that says "retired" is cut off after the hub committed: the tablet's retry
    hears 403 retired instead, and must still erase itself rather than keep its charts."""
    leaving = world.tablet("amina", ALPHA)
    chart = leaving.new_patient(ALPHA)
    leaving.sync()
    last_visit = leaving.visit(chart)
    _, body = _request_from(leaving)
    # The size of that request on the wire, headers and all, measured with a signature that
    # does not match (so the hub refuses it and stores nothing).
    probe = Link()
    with LinkEmulator("127.0.0.1", world.hub.port, probe) as emu, httpx.Client() as client:
        wrong = leaving.identity_headers(b"another body")
        assert client.post(f"{emu.url}/sync", content=body, headers=wrong).status_code == 401
    request_bytes = probe.stats.bytes_up
    assert world.hub.chart_heads()[chart] != leaving.heads()[chart]

    assert "retiring" in world.hub.ok("retire", leaving.device_id)
    # The first connection is cut the moment the request is through; the signal then holds.
    cuts = iter([request_bytes])
    link = Link(cut_after=lambda: next(cuts, None))
    with LinkEmulator("127.0.0.1", world.hub.port, link) as emu:
        leaving.store.db.execute("UPDATE meta SET value = ? WHERE key = 'hub.url'", [emu.url])
        result = leaving.cli("sync")
    assert link.stats.cuts == 1
    assert link.stats.connections == 2
    # The hub stored the visit and finished the retirement before the cut.
    assert last_visit in world.hub.encounters()[chart]
    assert world.hub.device_state(leaving.device_id)[0] == "retired"
    assert result.code == 0, result.err
    assert "this tablet was retired" in result.out
    assert "this tablet's data has been erased" in result.out
    assert leaving.erased
