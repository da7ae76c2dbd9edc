"""meprop.distributed.row_sparse_hook under DistributedDataParallel: gloo, 2 ranks, float64.

Every scenario trains the same seeded MLP; the hook must give the parameters plain DDP
all-reduce gives (and the same on both ranks), count the bytes its collectives carry,
and fall back to all-reduce when every row is touched. All scenarios run in one spawn.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import meprop.distributed as md
from ddp_scenarios import HIDDEN, IN, OUT, STEPS, free_port, mlp, single_process, worker

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo"),
]

WORLD, BATCH, K = 2, 2, 3
_PER_EXAMPLE = dict(k=K, batch=BATCH)
SCENARIOS = {
    "plain-exact": dict(_PER_EXAMPLE, clip=0.05),
    "hook-exact": dict(_PER_EXAMPLE, clip=0.05, hook="row"),
    "plain-lazy": dict(_PER_EXAMPLE, lazy=True),
    "hook-lazy": dict(_PER_EXAMPLE, lazy=True, hook="row", verify=True),
    "plain-accumulate": dict(_PER_EXAMPLE, lazy=True, micro=2),
    "hook-accumulate": dict(_PER_EXAMPLE, lazy=True, micro=2, hook="row"),
    "hook-sync-unified": dict(k=K, batch=4, mode="unified", sync=True, hook="row", lazy=True),
    "plain-fallback": dict(k=HIDDEN - 1, batch=4, lazy=True),
    "hook-fallback": dict(k=HIDDEN - 1, batch=4, lazy=True, hook="row"),
    "plain-dense-model": dict(batch=BATCH),
    "hook-dense-model": dict(batch=BATCH, hook="row"),
    "hook-penalty-verify": dict(_PER_EXAMPLE, hook="row", verify=True, penalty=1e-3),
    "plain-sparse-grad": dict(_PER_EXAMPLE, sparse_grad=True),
    "hook-sparse-grad": dict(_PER_EXAMPLE, sparse_grad=True, hook="row"),
    "hook-sparse-grad-lazy": dict(_PER_EXAMPLE, sparse_grad=True, hook="row", lazy=True),
}
#: Parameters of the MLP: 3 weights and 3 biases; the two hidden layers are meProp's.
MEPROP_SHAPES = [(HIDDEN, IN), (HIDDEN, HIDDEN)]
PARAM_ELEMENTS = IN * HIDDEN + HIDDEN + HIDDEN * HIDDEN + HIDDEN + HIDDEN * OUT + OUT


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{scenario: (rank 0 result, rank 1 result)} (see ddp_scenarios.train)."""
    out = tmp_path_factory.mktemp("ddp_hook")
    mp.spawn(worker, args=(WORLD, free_port(), str(out), SCENARIOS), nprocs=WORLD, join=True)
    return {name: tuple(torch.load(out / f"{name}-rank{r}.pt", weights_only=False) for r in range(WORLD))
            for name in SCENARIOS}


def _payload_as_planned(counter):
    """The tensors handed to collectives add up to what the shapes and row counts say."""
    sent = counter["all_reduce_payload"] + counter["all_gather_payload"] + counter["flag_payload"]
    assert sent == counter["planned_payload"]


def _same_on_both_ranks(results):
    rank0, rank1 = results
    assert "error" not in rank0, rank0.get("error")
    for a, b in zip(rank0["params"], rank1["params"]):
        assert torch.equal(a, b), "ranks must hold identical parameters"
    return rank0["params"]


def _assert_equal_params(actual, expected):
    for a, b in zip(actual, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("which", ["exact", "lazy", "accumulate", "fallback", "dense-model"])
def test_hook_equals_plain_ddp(runs, which):
    hooked = _same_on_both_ranks(runs[f"hook-{which}"])
    _assert_equal_params(hooked, _same_on_both_ranks(runs[f"plain-{which}"]))
    initial = [p.detach() for p in mlp().parameters()]
    assert len(initial) == len(hooked) == 6
    assert all(not torch.equal(a, b) for a, b in zip(hooked, initial)), "every parameter trained"


def test_per_example_hook_equals_one_process(runs):
    _assert_equal_params(_same_on_both_ranks(runs["hook-lazy"]), single_process(SCENARIOS["hook-lazy"]))


def test_synchronized_unified_equals_one_process_on_the_whole_batch(runs):
    spec = SCENARIOS["hook-sync-unified"]
    _assert_equal_params(_same_on_both_ranks(runs["hook-sync-unified"]), single_process(spec))


def test_synchronized_unified_sends_exactly_k_rows_per_layer(runs):
    counter = runs["hook-sync-unified"][0]["counter"]
    assert counter["forms"] == {"dense": 0, "union": 2, "gather": 0}
    assert counter["rows_sent"] == 2 * K
    _payload_as_planned(counter)
    rows_elements = sum(K * m for _, m in MEPROP_SHAPES)
    rest = PARAM_ELEMENTS - sum(n * m for n, m in MEPROP_SHAPES)
    assert counter["all_reduce_payload"] == 8 * (rows_elements + rest)
    assert counter["flag_payload"] == 2 * HIDDEN  # one byte per row of each meProp weight
    assert counter["sent_bytes"] == md.all_reduce_bytes(8 * (rows_elements + rest), WORLD) + 2 * HIDDEN


def test_per_example_byte_counts_match_the_touched_rows(runs):
    rank0, rank1 = runs["hook-exact"]
    counter = rank0["counter"]
    assert counter == rank1["counter"], "both ranks send the same amount"
    payload = {"dense": 0, "union": 0, "gather": 0}
    for (n, m), rows0, rows1 in zip(MEPROP_SHAPES, rank0["touched"], rank1["touched"]):
        u_max, u_union = max(len(rows0), len(rows1)), len(set(rows0) | set(rows1))
        costs = md.form_costs(n, 8 * m, (u_max, u_union), WORLD)
        form = min(md.FORMS, key=lambda f: (costs[f], md.FORMS.index(f)))
        payload[form] += 8 * m * {"dense": n, "union": u_union, "gather": u_max}[form]
    assert payload["gather"] > 0, "per-example rows differ between ranks: gathered"
    rest = 8 * (PARAM_ELEMENTS - sum(n * m for n, m in MEPROP_SHAPES))
    assert counter["all_gather_payload"] == payload["gather"]
    _payload_as_planned(counter)
    assert counter["all_reduce_payload"] == rest + payload["dense"] + payload["union"]
    dense_bytes = md.all_reduce_bytes(8 * PARAM_ELEMENTS, WORLD)
    assert counter["sent_bytes"] < dense_bytes / 2


def test_falls_back_to_all_reduce_when_every_row_is_touched(runs):
    first, last = (runs["hook-fallback"][0][f"counter_step{s}"] for s in (0, STEPS - 1))
    dense = md.all_reduce_bytes(8 * PARAM_ELEMENTS, WORLD)
    for counter in (first, last):
        assert counter["forms"] == {"dense": 2, "union": 0, "gather": 0}
        assert counter["all_reduce_payload"] == 8 * PARAM_ELEMENTS and counter["all_gather_payload"] == 0
        _payload_as_planned(counter)
    assert first["sent_bytes"] == dense + 2 * HIDDEN  # the first step exchanges the row flags
    assert last["sent_bytes"] == dense  # then plain all-reduce: never more than DDP


def test_model_without_meprop_layers_warns_then_all_reduces(runs):
    result = runs["hook-dense-model"][0]
    assert any("no meProp layer" in message for message in result["warnings"])
    assert result["counter"]["forms"] == {"dense": 0, "union": 0, "gather": 0}
    assert result["counter"]["all_reduce_payload"] == 8 * PARAM_ELEMENTS


def test_verify_refuses_a_loss_term_on_a_meprop_weight(runs):
    for result in runs["hook-penalty-verify"]:
        assert "did not touch" in result["error"] and "weight_decay" in result["error"]


@pytest.mark.parametrize("name", ["plain-sparse-grad", "hook-sparse-grad", "hook-sparse-grad-lazy"])
def test_sparse_grad_layers_train_under_ddp_with_dense_gradients(runs, name):
    """sparse_grad=True under a multi-rank process group: dense weight gradients (DDP all-reduces
    dense tensors only), said once in a warning naming sparse_grad; the training equals one
    process on the whole batch, where the gradients are row-sparse."""
    _assert_equal_params(_same_on_both_ranks(runs[name]), single_process(SCENARIOS[name]))
    warned = [m for m in runs[name][0]["warnings"] if "sparse_grad=True" in m]
    # once per meProp weight: the DDP model's and those of a twin built at each step (ddp_scenarios)
    assert len(warned) == len(MEPROP_SHAPES) * (1 + STEPS), runs[name][0]["warnings"]
    assert all("dense gradient" in m and "process group of 2 ranks" in m for m in warned)
