"""What the DDP hooks of :mod:`meprop.distributed` send: the ring byte model and the counter.

Bytes each rank sends (``W`` ranks): a ring all-reduce of a ``B``-byte tensor costs
``2(W-1)/W · B`` (reduce-scatter + all-gather), a ring all-gather of ``B`` bytes per rank
``(W-1) · B``. :func:`form_costs` prices a weight gradient in each form the row hook can
send; :class:`CommCounter` adds up what the hooks hand to collectives.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FORMS", "CommCounter", "all_reduce_bytes", "all_gather_bytes", "form_costs"]

#: How a meProp weight's gradient can go over the wire (see the module docstring).
FORMS = ("dense", "union", "gather")


def all_reduce_bytes(nbytes: float, world_size: int) -> float:
    """Bytes each rank sends to all-reduce ``nbytes`` (ring: reduce-scatter + all-gather)."""
    return 2.0 * (world_size - 1) / world_size * nbytes


def all_gather_bytes(nbytes: float, world_size: int) -> float:
    """Bytes each rank sends to all-gather its ``nbytes`` (ring: W-1 hops)."""
    return float(world_size - 1) * nbytes


def form_costs(n: int, row_bytes: int, rows_per_rank, world_size: int) -> dict[str, float]:
    """Bytes each rank sends for a ``(n, m)`` weight gradient in each of :data:`FORMS`.

    ``row_bytes``: ``m`` times the element size; ``rows_per_rank``: ``(U_max, U_union)``,
    the most rows one rank touched and the rows any rank touched.
    """
    u_max, u_union = rows_per_rank
    return {
        "dense": all_reduce_bytes(n * row_bytes, world_size),
        "union": all_reduce_bytes(u_union * row_bytes, world_size),
        "gather": all_gather_bytes(u_max * row_bytes, world_size),
    }


@dataclass
class CommCounter:
    """What the hook handed to collectives since the last :meth:`reset`, in bytes per rank.

    ``all_reduce_payload`` / ``all_gather_payload`` / ``flag_payload``: sizes of the tensors
    this rank handed to all-reduce / all-gather (values; one byte per row); :meth:`sent_bytes`:
    what that costs each rank on the wire under the ring model. ``planned_payload``: the same
    total computed from the parameters' shapes and the exchanged row counts (a check of the
    former). ``forms``: how many weight gradients went in each form; ``rows_sent``: their rows.
    """

    all_reduce_payload: int = 0
    all_gather_payload: int = 0
    flag_payload: int = 0
    planned_payload: int = 0
    calls: int = 0

    def __post_init__(self) -> None:
        self.forms = {form: 0 for form in FORMS}
        self.rows_sent = 0
        self.weights: list[dict] = []  # per meProp weight: n, m, rows_max, rows_union, form

    def reset(self) -> None:
        self.all_reduce_payload = self.all_gather_payload = self.flag_payload = 0
        self.planned_payload = self.calls = 0
        self.__post_init__()

    def sent_bytes(self, world_size: int) -> float:
        """Bytes this rank sent (ring model) for what was counted."""
        return (all_reduce_bytes(self.all_reduce_payload, world_size)
                + all_gather_bytes(self.all_gather_payload + self.flag_payload, world_size))

    def to_dict(self, world_size: int) -> dict:
        return {"all_reduce_payload": self.all_reduce_payload,
                "all_gather_payload": self.all_gather_payload, "flag_payload": self.flag_payload,
                "planned_payload": self.planned_payload,
                "collectives": self.calls, "sent_bytes": self.sent_bytes(world_size),
                "forms": dict(self.forms), "rows_sent": self.rows_sent,
                "weights": [dict(w) for w in self.weights]}
