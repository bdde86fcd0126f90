"""Choosing the cell a namespace goes to: the healthy cell with the most spare capacity that still
fits the namespace's quota, ties broken by name (so the same state always gives the same cell). A full
or unhealthy cell is never chosen; ops may name a cell themselves (``--cell``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class PlacementError(ValueError):
    """No cell can take the namespace; the message says why for each cell."""


@dataclass(frozen=True)
class CellLoad:
    name: str
    capacity: float  # actions per second the cell is sized for
    committed: float  # the actions per second of the quotas of the namespaces on it
    healthy: bool

    @property
    def spare(self) -> float:
        return self.capacity - self.committed


def choose_cell(cells: Sequence[CellLoad], demand: float) -> str:
    """The cell for a namespace whose quota is ``demand`` actions per second."""
    fitting = [cell for cell in cells if cell.healthy and cell.spare >= demand]
    if not fitting:
        if not cells:
            raise PlacementError("no cell exists; create one with `perdure cell create NAME --partitions N`")
        reasons = "; ".join(
            f"{cell.name}: unhealthy" if not cell.healthy else f"{cell.name}: {cell.spare:g} actions/s spare"
            for cell in sorted(cells, key=lambda c: c.name)
        )
        raise PlacementError(f"no healthy cell has {demand:g} actions/s to spare ({reasons})")
    return min(fitting, key=lambda cell: (-cell.spare, cell.name)).name
