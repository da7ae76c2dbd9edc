"""The row-sparse request belongs to the lazy optimizer: nothing stays on the model without it."""

from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys
from pathlib import Path

import torch

import meprop
from optim_helpers import batches, loss_of, meprop_weights, mlp

ROOT = Path(__file__).resolve().parents[2]


def _lazy_trained_model():
    model = meprop.convert(mlp(), k=4)
    opt = meprop.optim.Adam(model.parameters(), lr=1e-2, lazy=True)
    for x, y in batches(2):
        opt.zero_grad()
        loss_of(model, x, y).backward()
        opt.step()
    assert all(w.grad.is_sparse for w in meprop_weights(model))  # the request was live
    return model, opt


def _torch_adam_steps(model):
    """torch.optim.Adam on the same model, from zeroed gradients: must not meet a sparse gradient."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for x, y in batches(2, seed=5):
        opt.zero_grad()
        loss_of(model, x, y).backward()
        opt.step()
    assert all(not p.grad.is_sparse for p in model.parameters())


def test_torch_adam_works_after_the_lazy_optimizer_is_deleted():
    model, opt = _lazy_trained_model()
    del opt
    gc.collect()
    _torch_adam_steps(model)


def test_no_attribute_is_left_on_the_parameters():
    model, opt = _lazy_trained_model()
    for param in model.parameters():
        assert not any(name.startswith("_meprop") for name in vars(param)), vars(param)
    assert b"meprop_row_sparse" not in pickle.dumps(model)


def test_two_optimizers_each_own_their_request():
    model = meprop.convert(mlp(), k=4)
    lazy = meprop.optim.SGD(model.parameters(), lr=0.1, lazy=True)
    exact = meprop.optim.SGD(model.parameters(), lr=0.1)
    del exact
    loss_of(model, *batches(1)[0]).backward()
    assert all(w.grad.is_sparse for w in meprop_weights(model))
    state = lazy.state_dict()
    for group in state["param_groups"]:
        group["lazy"] = False
    lazy.load_state_dict(state)  # every group exact now: the request is withdrawn
    model.zero_grad()
    loss_of(model, *batches(1)[0]).backward()
    assert not any(w.grad.is_sparse for w in meprop_weights(model))


def test_torch_adam_works_on_a_saved_model_loaded_in_a_new_process(tmp_path):
    model, opt = _lazy_trained_model()
    path = tmp_path / "model.pt"
    torch.save(model, path)
    script = (
        "import sys, torch, meprop\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from test_optim_request_ownership import _torch_adam_steps\n"
        "model = torch.load(sys.argv[1], weights_only=False)\n"
        "_torch_adam_steps(model)\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script, str(path), str(Path(__file__).parent)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
