"""The DDP section: bytes each rank sends per step (measured) and what they would cost (projected).

From the ``ddp_step`` records (:mod:`meprop.lab.engine.ddp`): a table of the measured steps
(dense DDP, meProp + all-reduce, meProp + :func:`meprop.distributed.row_sparse_hook`) with
the bytes each rank sends per step; then two **projections** (a model, not a measurement;
loopback gloo is no network):

- communication time per step at 10, 25 and 100 Gbit/s: bytes x 8 / bandwidth (latency
  and overlap with the backward ignored);
- the byte saving as the number of ranks grows: dense sends ``2(W-1)/W`` x the model;
  the hook sends, per meProp weight, the cheapest of dense / union / gather
  (:func:`meprop.distributed.form_costs`) plus one flag byte per row and rank, with each
  rank touching as many rows as measured (``U``, the most one rank touched) and the ranks'
  union growing as a power law fitted to the measured one: ``union(W) = min(n, U·W^a)``
  with ``a = log(union_measured / U) / log(W_measured)`` (per-example ranks mostly touch the
  same rows: the large-gradient units); synchronized unified ranks share their k rows (a = 0).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

import meprop.distributed as md
from meprop.lab.report.html import table_html
from meprop.lab.report.sections import Section
from meprop.lab.report.tables import write_table
from meprop.lab.measurements import DDP_STEP

__all__ = ["BANDWIDTHS_GBIT", "PROJECTED_RANKS", "ddp_records", "measured_table",
           "bandwidth_projection", "ranks_projection", "projected_hook_bytes", "section"]

#: Link speeds of the communication-time projection, Gbit/s.
BANDWIDTHS_GBIT = (10, 25, 100)
#: World sizes of the scaling projection.
PROJECTED_RANKS = (2, 4, 8, 16, 32, 64)
_MB = 1e6


def ddp_records(records) -> list[dict]:
    """The ``ddp_step`` records that were measured (status ok, with their ``ddp`` object); of a
    case measured several times, the last one read (the latest run)."""
    latest = {}
    for r in records:
        if (r.get("type") == "bench" and r.get("status") == "ok" and isinstance(r.get("ddp"), dict)
                and (r.get("case") or {}).get("measurement") == DDP_STEP.name):
            latest.pop(r.get("key"), None)
            latest[r.get("key")] = r
    return list(latest.values())


def _label(case: dict) -> str:
    sync = ", synchronized" if case.get("mode") == "unified" else ""
    return (f"{case['workload']} {case['in_features']}-{case['hidden']}x{case['layers']}, "
            f"k={case['k']}, batch {case['batch']}/rank, {case['mode']}{sync}, {case['optimizer']} Adam")


def _ms(side: dict) -> float | None:
    timing = side.get("timing") or {}
    return None if timing.get("median_s") is None else 1e3 * timing["median_s"]


def _interval(paired: dict | None) -> str:
    if not paired or not paired.get("ci95"):
        return ""
    low, high = paired["ci95"]
    return f"{paired['median']:.2f} [{low:.2f}, {high:.2f}]"


def measured_table(records: list[dict]) -> pd.DataFrame:
    rows = []
    for r in records:
        d, sides = r["ddp"], r["ddp"]["sides"]
        hook = sides["meprop_hook"]
        rows.append({
            "ranks": d["world_size"], "case": _label(r["case"]),
            "dense ms": _ms(sides["dense"]), "meProp+all-reduce ms": _ms(sides["meprop_allreduce"]),
            "meProp+hook ms": _ms(hook), "hook vs all-reduce": d.get("hook_vs_allreduce_speedup"),
            "paired 95% CI": _interval(d.get("hook_vs_allreduce_paired")),
            "dense MB/rank": sides["dense"]["sent_bytes_total"] / _MB,
            "hook MB/rank": hook["sent_bytes_total"] / _MB,
            "fewer bytes": (d.get("bytes_ratio") or {}).get("meprop_hook"),
            "forms": ", ".join(f"{k} {v}" for k, v in (hook.get("forms") or {}).items() if v),
            "bytes checked": all(s.get("payload_ok") for s in sides.values()),
            "noisy": r.get("noisy"), "note": d.get("note") or "",
        })
    return pd.DataFrame(rows)


def bandwidth_projection(records: list[dict]) -> pd.DataFrame:
    """PROJECTION: communication ms per step at each bandwidth, from the measured bytes."""
    rows = []
    for r in records:
        sides = r["ddp"]["sides"]
        row = {"ranks": r["ddp"]["world_size"], "case": _label(r["case"])}
        for gbit in BANDWIDTHS_GBIT:
            for name, title in (("dense", "dense"), ("meprop_hook", "hook")):
                row[f"{title} ms @{gbit}G"] = 1e3 * sides[name]["sent_bytes_total"] * 8 / (gbit * 1e9)
        rows.append(row)
    return pd.DataFrame(rows)


def projected_hook_bytes(record: dict, world: int) -> float | None:
    """PROJECTION: bytes one rank sends per step with the hook at ``world`` ranks (module docstring)."""
    d, case = record["ddp"], record["case"]
    weights = d["sides"]["meprop_hook"].get("weights")
    if not weights:
        return None
    element = 8 if case["dtype"] == "float64" else 4
    meprop_bytes = sum(w["n"] * w["m"] * element for w in weights)
    total = md.all_reduce_bytes(d["param_bytes"] - meprop_bytes, world)
    synchronized = case["mode"] == "unified"
    for w in weights:
        n, per_rank = w["n"], min(w["rows_max"], w["n"])
        union = min(n, per_rank * world ** _union_exponent(w, d["world_size"], synchronized))
        costs = md.form_costs(n, w["m"] * element, (per_rank, union), world)
        total += min(costs.values()) + md.all_gather_bytes(n, world)
    rows = sum(w["n"] for w in weights)
    if synchronized:
        total += md.all_reduce_bytes(rows * element, world)  # float32 sums (float64 models: 8)
    if case.get("optimizer") == "lazy":
        total += md.all_reduce_bytes(rows, world)
    return total


def _union_exponent(weight: dict, measured_world: int, synchronized: bool) -> float:
    """``a`` of ``union(W) = U·W^a``, from the union measured at ``measured_world`` ranks."""
    per_rank, union = weight["rows_max"], weight["rows_union"]
    if synchronized or measured_world < 2 or not per_rank or union <= per_rank:
        return 0.0
    return math.log(union / per_rank) / math.log(measured_world)


def ranks_projection(records: list[dict]) -> pd.DataFrame:
    """PROJECTION: dense bytes / hook bytes per rank and step as the number of ranks grows."""
    rows = []
    for r in records:
        row = {"measured at": r["ddp"]["world_size"], "case": _label(r["case"])}
        for world in PROJECTED_RANKS:
            hook = projected_hook_bytes(r, world)
            dense = md.all_reduce_bytes(r["ddp"]["param_bytes"], world)
            row[f"{world} ranks"] = None if not hook else dense / hook
        rows.append(row)
    return pd.DataFrame(rows)


def section(records, out_dir: Path) -> Section:
    """The DDP part of the page (a note when no ``ddp_step`` record was measured)."""
    found = ddp_records(records)
    if not found:
        return Section("ddp", "Distributed data parallel",
                       '<p class="note">No ddp_step results in the inputs (<code>meprop bench '
                       "--measurement ddp_step --workload mlp --world-size 2</code> measures them).</p>")
    tables = {"ddp_measured": measured_table(found), "ddp_projection_bandwidth": bandwidth_projection(found),
              "ddp_projection_ranks": ranks_projection(found)}
    files = [path for name, table in tables.items() for path in write_table(table, out_dir, name).values()]
    html = (
        "<p>Measured: gloo on 127.0.0.1, each rank its own process; a step is zero_grad, forward, "
        "loss, backward (DDP communicates inside it), clip_grad_norm_, step; its time is the "
        "slowest rank's median. Bytes per rank and step are counted by each side's hook from the "
        "tensors it hands to collectives, priced with ring algorithms, plus meProp's traffic "
        "outside the hook (synchronized selection, lazy optimizer's row flags); "
        "\"bytes checked\": the counted payload equals what the tensor shapes give.</p>"
        + table_html(tables["ddp_measured"], speedup_column="hook vs all-reduce")
        + "<h3>Projection (a model, not a measurement): communication time per step</h3>"
        "<p>bytes x 8 / link speed; latency and overlap with the backward are ignored.</p>"
        + table_html(tables["ddp_projection_bandwidth"], speedup_column=None)
        + "<h3>Projection (a model, not a measurement): fewer bytes than dense DDP as ranks grow</h3>"
        "<p>Each rank touches as many rows as measured; the ranks' union of rows grows as a power "
        "law fitted to the measured union (per-example ranks mostly touch the same rows); "
        "synchronized unified ranks share their k rows. The row flags (one byte per row and rank) "
        "grow with the ranks.</p>"
        + table_html(tables["ddp_projection_ranks"], speedup_column=None)
    )
    return Section("ddp", "Distributed data parallel", html, files)
