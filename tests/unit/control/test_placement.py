"""Placement by spare capacity and health, with a deterministic tie-break."""

from __future__ import annotations

import pytest

from perdure.platform.control.placement import CellLoad, PlacementError, choose_cell


def test_the_cell_with_most_spare_capacity_that_is_healthy_wins() -> None:
    cells = [
        CellLoad("cell-1", capacity=1_000, committed=900, healthy=True),  # 100 spare
        CellLoad("cell-2", capacity=5_000, committed=1_000, healthy=False),  # most spare, unhealthy
        CellLoad("cell-3", capacity=2_000, committed=500, healthy=True),  # 1,500 spare
    ]
    assert choose_cell(cells, demand=100) == "cell-3"
    assert choose_cell(cells[:1], demand=100) == "cell-1"  # exactly full after: still fits


def test_ties_are_broken_by_name_whatever_the_order() -> None:
    a = CellLoad("cell-a", capacity=1_000, committed=0, healthy=True)
    b = CellLoad("cell-b", capacity=1_000, committed=0, healthy=True)
    assert choose_cell([b, a], demand=10) == choose_cell([a, b], demand=10) == "cell-a"


def test_a_full_or_unhealthy_cell_is_never_chosen() -> None:
    cells = [
        CellLoad("full", capacity=1_000, committed=950, healthy=True),
        CellLoad("sick", capacity=9_000, committed=0, healthy=False),
    ]
    with pytest.raises(PlacementError, match=r"full: 50 actions/s spare; sick: unhealthy"):
        choose_cell(cells, demand=100)
    with pytest.raises(PlacementError, match="no cell exists"):
        choose_cell([], demand=1)
