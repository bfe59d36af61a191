"""Reassigning a village or a household moves its charts: the old tablet pushes what it has,
drops them and is told why; the new one receives them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sync_hub.replica import REASSIGNED_DETAIL


def test_reassigning_a_village_moves_its_charts(
    make_tablet: Any, hub_cli: Any, hub_db: Callable[..., list[tuple[Any, ...]]]
) -> None:
    amina = make_tablet("amina", "Kijiji cha Mlima")
    baraka = make_tablet("baraka", "Mto wa Mbu")
    charts = {amina.new_chart().id, amina.new_chart(given="Neema").id}
    stays = amina.new_chart(village="Mto wa Mbu, kitongoji").id  # nobody's: stays with amina
    amina.sync()
    baraka.sync()
    assert baraka.holds() == set()

    moved = hub_cli("reassign", "--village", "kijiji cha mlima", "--to-chw", "baraka")
    assert moved.code == 0, moved.err
    assert "(2 charts) from amina to baraka" in moved.out

    _, response = amina.exchange(amina.request())
    assert {(n.doc, n.code, n.detail) for n in response.dropped} == {
        (doc, "reassigned", REASSIGNED_DETAIL) for doc in charts
    }
    assert amina.holds() == {stays}
    # The tablet reports the drop; after that it hears no more about those charts.
    _, response = amina.exchange(amina.request())
    assert response.dropped == []
    assert hub_db("SELECT doc FROM device_docs WHERE device = ?", [amina.device_id]) == [(stays,)]
    _, response = amina.exchange(amina.request())
    assert response.dropped == []

    _, response = baraka.exchange(baraka.request())
    assert {s.doc for s in response.snapshots} == charts
    assert baraka.holds() == charts


def test_edits_made_before_the_move_are_pushed_then_dropped(make_tablet: Any, hub_cli: Any) -> None:
    amina = make_tablet("amina", "Kijiji cha Mlima")
    baraka = make_tablet("baraka", "Mto wa Mbu")
    chart = amina.new_chart()
    amina.sync()
    hub_cli.ok("reassign", "--village", "Kijiji cha Mlima", "--to-chw", "baraka")
    # Offline, amina records something before she hears of the move.
    edited = amina.chart(chart.id)
    edited.set_pregnancy_status("pregnant")
    amina.store(edited)
    outcome, response = amina.exchange(amina.request())
    assert response.applied == [0]
    assert [n.doc for n in outcome.dropped] == [chart.id]
    assert amina.holds() == set()
    baraka.sync_until_done()
    assert baraka.chart(chart.id).view().fields["pregnancy_status"] == "pregnant"


def test_reassigning_a_household_moves_it_out_of_a_covered_village(
    make_tablet: Any, hub_cli: Any
) -> None:
    amina = make_tablet("amina", "Kijiji cha Mlima")
    household = amina.new_household("Kijiji cha Mlima")
    member = amina.new_chart(household_id=household.id)
    other = amina.new_chart(given="Neema")
    amina.sync()
    zawadi = make_tablet("zawadi", "Mto wa Mbu")

    moved = hub_cli("reassign", "--household", household.id, "--to-chw", "zawadi")
    assert moved.code == 0, moved.err
    assert f"household '{household.id}' (2 charts) from nobody's catchment" in moved.out

    amina.sync_until_done()
    assert amina.holds() == {other.id}
    zawadi.sync_until_done()
    assert zawadi.holds() == {household.id, member.id}

    # And back: moving it to amina again brings it back and takes it from zawadi.
    hub_cli.ok("reassign", "--household", household.id, "--to-chw", "amina")
    zawadi.sync_until_done()
    amina.sync_until_done()
    assert zawadi.holds() == set()
    assert amina.holds() == {household.id, member.id, other.id}


def test_a_chart_made_outside_every_catchment_stays_with_its_tablet_until_assigned(
    make_tablet: Any, hub_cli: Any
) -> None:
    amina = make_tablet("amina", "Kijiji cha Mlima")
    colleague = make_tablet("amina")
    chart = amina.new_chart(village="Bonde")
    amina.sync()
    colleague.sync()
    assert colleague.holds() == set()  # only the tablet that made it
    assert amina.holds() == {chart.id}
    hub_cli.ok("catchment", "--chw", "amina", "--add-village", "bonde")
    colleague.sync()
    assert colleague.holds() == {chart.id}


def test_catchment_changes_from_the_cli(hub_cli: Any) -> None:
    shown = hub_cli(
        "catchment", "--chw", "amina", "--add-village", "Kijiji", "--add-village", "Mto"
    )
    assert shown.code == 0
    assert "new CHW amina" in shown.err
    assert "villages Kijiji, Mto" in shown.err
    shared = hub_cli("catchment", "--chw", "baraka", "--add-village", "KIJIJI")
    assert "also in the catchment of amina" in shared.err
    removed = hub_cli("catchment", "--chw", "amina", "--remove-village", "kijiji")
    assert "villages Mto" in removed.err
    missing = hub_cli("catchment", "--chw", "amina", "--remove-village", "kijiji")
    assert missing.code == 1
    assert "not in amina's catchment" in missing.err


def test_reassigning_to_an_unknown_chw_is_refused(hub_cli: Any) -> None:
    hub_cli.ok("catchment", "--chw", "amina", "--add-village", "Kijiji")
    result = hub_cli("reassign", "--village", "Kijiji", "--to-chw", "Amina ")
    assert result.code == 1
    assert "no CHW named 'Amina'" in result.err
    assert "villages Kijiji" in hub_cli("catchment", "--chw", "amina").err
