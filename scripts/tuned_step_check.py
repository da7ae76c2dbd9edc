"""A tuned meProp training run end to end, as a user's process runs it (CI's tuning leg).

The tuner is on (its default) with the cache folder ``MEPROP_TUNING_DIR``: empty on the first
run, so every layer's first backward measures its candidates and writes the cache; a second
run on the same folder reads the winners back. A converted MLP (float32, then under bfloat16
autocast) and a MepropLSTM train a few steps with a lazy Adam; the losses must fall and the
choices must come from where ``--expect`` says.

    MEPROP_TUNING_DIR=$(mktemp -d) python scripts/tuned_step_check.py --expect measured
    MEPROP_TUNING_DIR=<same> python scripts/tuned_step_check.py --expect cached
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn as nn

import meprop
from meprop import dispatch, kernels, tuning


class _Tagger(nn.Module):
    """A MepropLSTM over 4 steps of 5 features, classified from its last output."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.head = meprop.MepropLSTM(5, 16, k=8), nn.Linear(16, 4)

    def forward(self, seq):  # seq: (B, T, 5)
        return self.head(self.rnn(seq)[0][:, -1])  # (B, 4)


def _train(model, batches, autocast=None) -> list[float]:
    opt = meprop.optim.Adam(model.parameters(), lr=1e-2, lazy=True)
    losses = []
    for x, y in batches:
        opt.zero_grad()
        with torch.autocast("cpu", autocast, enabled=autocast is not None):
            out = model(x)
        loss = nn.functional.cross_entropy(out.float(), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expect", choices=("measured", "cached"), required=True,
                        help="where the formulation choices must come from")
    args = parser.parse_args(argv)
    if not os.environ.get("MEPROP_TUNING_DIR") or not tuning.enabled():
        print("tuned_step_check: set MEPROP_TUNING_DIR (and leave MEPROP_TUNING unset)", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    x, y = torch.randn(64, 20), torch.randint(0, 4, (64,))
    batches = [(x, y)] * 8
    mlp = meprop.convert(nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                                       nn.Linear(64, 4)), k=8)
    sequences = x.view(64, 4, 5)  # (B, T, in)
    runs = {
        "mlp float32": _train(mlp, batches),
        "mlp bfloat16 autocast": _train(mlp, batches, torch.bfloat16),
        "lstm float32": _train(_Tagger(), [(sequences, y)] * 8),
    }
    counts = dispatch.choice_counts()
    failed = [name for name, losses in runs.items() if not losses[-1] < losses[0]]
    cache = tuning.cache_path()
    print(f"tuned_step_check: kernels {'in use' if kernels.available() else 'off'}; choices {counts}; "
          f"cache {cache} ({'written' if cache.exists() else 'absent'}); "
          + "; ".join(f"{name} loss {losses[0]:.3f} -> {losses[-1]:.3f}" for name, losses in runs.items()))
    if failed:
        print(f"tuned_step_check: the loss did not fall for {failed}", file=sys.stderr)
        return 1
    if not counts.get(args.expect) or not cache.exists():
        print(f"tuned_step_check: expected {args.expect} choices and a cache file, got {counts}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
