"""The named profiles: grids of cases with the timing budget that fits them.

- ``smoke``: a handful of tiny cases, seconds in all (CI runs it end to end).
- ``quick``: the default job, a newcomer's first run (about 1.5 minutes on 2 CPU cores): every
  workload's training step, backward and forward at its typical shape (the cell the report's
  headline quotes), a few k ratios and two widths for the figures and the break-even, the
  paper's MNIST cell, the targets' cheaper rows and one step under DDP; 2 threads (1 for the
  paper's settings), as the targets file's reference machine.
- ``standard``: the grid ``quick`` used to be (about 10 minutes on 2 CPU cores): hidden
  {500, 1024, 4096}, k ratio {1%, 4%, 10%, 50%}, batch {1, 64, 1024}, cpu; and the training
  step of every workload (MLP, linear, the POS LSTM, a transformer block); the MLP's step
  under DDP.
- ``paper``: the paper's shapes (h=500, k 5/10/20/80, batch 1/10/50; Table 7's
  h=8192, batch 1024, k 8..512; Table 8's MLP h=8192), the MNIST training step and the
  POS LSTM (Tables 1-2).
- ``full``: hidden up to 8192, k ratio 0.5%..100%, batch 1..1024, cpu and cuda.
- ``optimizers``: the MNIST MLP's training step (784-h-h-10, batch 10, k=20, 1 thread) at
  h=500 and h=4096, per-example and unified, with every torch optimizer on both sides (SGD,
  SGD with momentum, Adam, AdamW, Adagrad, RMSprop; default, foreach and fused where torch has
  them) and meProp's lazy Adam against dense Adam (default and fused).
- ``perf``: every case a targets file needs (``--targets FILE``, default the project's own
  ``benchmarks/targets.toml``: float32, 2 threads unless a target says otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from meprop.checks import check_choice
from meprop.lab.plan.cases import Case, grid
from meprop.lab.plan.targets import Target, perf_cases
from meprop.lab.plan.optimizers import TORCH_OPTIMIZER_NAMES
from meprop.lab.plan.timing import TimingOptions
from meprop.lab.measurements import TRAIN_STEP

__all__ = ["Profile", "PROFILES", "profile_cases"]


@dataclass(frozen=True)
class Profile:
    """A named grid and the timing options that fit it (``timing.budget_s`` per case)."""

    name: str
    description: str
    build: Callable[[], list[Case]] = field(repr=False)
    timing: TimingOptions = TimingOptions()
    uses_targets: bool = False  # the cases are those of a targets file
    fuller: str | None = None  # the profile to run for more of the same story (the report says it)

    def cases(self, targets: tuple[Target, ...] | None = None) -> list[Case]:
        """The profile's cases; a targets profile runs those of ``targets`` (default: the project's file)."""
        if not self.uses_targets:
            return self.build()
        if targets is None:
            from meprop.lab.plan.target_file import default_targets

            targets = default_targets()
        return perf_cases(targets)


def _smoke() -> list[Case]:
    tiny = dict(hidden=32, batch=4, threads=1)
    cases = [
        Case("linear", m, k=4, mode=md, **tiny)
        for m in ("forward", "linear_backward", "overall_backward", "train_step")
        for md in ("unified", "per_example")
    ]
    cases += [
        Case("mlp", m, k=4, mode="unified", in_features=16, **tiny)
        for m in ("linear_backward", "overall_backward", "train_step")
    ]
    cases += [Case("lstm", m, hidden=16, k=8, batch=1, threads=1, mode="per_example", in_features=8)
              for m in ("linear_backward", "train_step")]
    cases += [Case("mlp", "ddp_step", k=4, mode="per_example", in_features=16, world_size=2, **tiny)]
    cases += [Case("transformer", m, hidden=64, k=4, batch=1, threads=1, mode=md)
              for m, md in (("overall_backward", "per_example"), ("train_step", "unified"))]
    return cases


def _quick() -> list[Case]:
    # A first run: each section of the report gets representative cells, no more. Batch 1024
    # at n=4096 (a second per dense call) is left to ``standard``.
    two = dict(threads=2, mode=("unified", "per_example"))
    paper = dict(hidden=(500,), batch=(10,), k=(20,), mode=("per_example",), threads=1)
    # linear-only backprop: the break-even and the k/n and width figures, and the targets' rows
    cases = grid(measurement=("linear_backward",), hidden=(1024, 4096), batch=(64,),
                 k_ratio=(0.01, 0.1, 0.5), **two)
    cases += grid(measurement=("linear_backward",), hidden=(4096,), batch=(1,), k_ratio=(0.01,),
                  mode=("per_example",), threads=2)
    cases += grid(measurement=("linear_backward",), in_features=784, **paper)  # Table 1's cell
    # the forward (k does not change it), one layer and the paper's MLP
    cases += grid(measurement=("forward",), hidden=(1024, 4096), batch=(64,), k_ratio=(0.01,),
                  mode=("unified",), threads=2)
    cases += grid(workload=("mlp",), measurement=("forward", "overall_backward"), **paper)
    # the MLP's whole backward over k/n, two widths
    cases += grid(workload=("mlp",), measurement=("overall_backward",), hidden=(500, 4096),
                  batch=(64,), k_ratio=(0.01, 0.1), **two)
    return cases + _quick_steps()


def _quick_steps() -> list[Case]:
    # The training step of every workload at its typical shape: the paper's MNIST MLP (two k,
    # the exact Adam, fused Adam on both sides, unified), the MLP at n=4096 (a target), one
    # layer, the POS LSTM (h=500, one sentence, k=5 of 2000 gate entries, 45 tags, and with
    # fused Adam) and a GPT-2-style block; then one MLP step under DDP (2 processes, 1 thread
    # each). The transformer's and n=4096's steps are the slowest cells: one each per mode.
    mnist = dict(workload=("mlp",), measurement=("train_step",), hidden=(500,), batch=(10,), threads=1)
    cases = grid(k=(5, 20), mode=("per_example",), **mnist)
    cases += [cases[-1].replace(optimizer="exact"), cases[-1].replace(adam="fused")]
    cases += grid(k=(20,), mode=("unified",), **mnist)
    step = dict(measurement=("train_step",), batch=(64,), threads=2)
    cases += grid(workload=("mlp",), hidden=(4096,), k=(41,), mode=("per_example",), **step)
    cases += grid(workload=("linear",), hidden=(4096,), k_ratio=(0.01,), mode=("unified", "per_example"), **step)
    lstm = grid(workload=("lstm",), measurement=("linear_backward", "train_step"), k=(5,),
                hidden=(500,), batch=(1,), mode=("per_example",), threads=1)
    cases += [c.replace(classes=45) for c in lstm] + [lstm[-1].replace(classes=45, adam="fused")]
    cases += grid(workload=("transformer",), measurement=("overall_backward",), k_ratio=(0.04,),
                  hidden=(512,), batch=(8,), mode=("per_example",), threads=2)
    cases += grid(workload=("transformer",), measurement=("train_step",), k_ratio=(0.04,),
                  hidden=(512,), batch=(8,), mode=("unified", "per_example"), threads=2)
    cases += grid(workload=("mlp",), measurement=("ddp_step",), k_ratio=(0.04,), hidden=(1024,),
                  batch=(64,), mode=("per_example",), threads=1, world_size=(2,))
    return cases


_STANDARD_HIDDEN = (500, 1024, 4096)
_STANDARD_RATIOS = (0.01, 0.04, 0.1, 0.5)
_STANDARD_BATCH = (1, 64, 1024)


def _standard() -> list[Case]:
    # The fuller CPU job. Linear-only backprop over the whole grid for both top-k modes; the
    # forward (k does not change it: one k ratio); the paper's MLP (784-n-n-10) overall
    # backprop over the k ratios for batch 64 and 1024, and its training step.
    axes = dict(hidden=_STANDARD_HIDDEN, batch=_STANDARD_BATCH)
    cases = grid(measurement=("linear_backward",), k_ratio=_STANDARD_RATIOS,
                 mode=("unified", "per_example"), **axes)
    cases += grid(measurement=("forward",), k_ratio=(0.04,), mode=("unified",), **axes)
    cases += grid(workload=("mlp",), measurement=("overall_backward",), k_ratio=_STANDARD_RATIOS,
                  hidden=_STANDARD_HIDDEN, batch=(64, 1024), mode=("unified", "per_example"))
    cases += grid(workload=("mlp",), measurement=("train_step",), k_ratio=(0.04,),
                  hidden=_STANDARD_HIDDEN, batch=(64, 1024), mode=("unified",))
    # the MLP's step under DDP on 2 local processes (1 thread each), both selection modes
    cases += grid(workload=("mlp",), measurement=("ddp_step",), k_ratio=(0.04,), hidden=(1024,),
                  batch=(64,), mode=("unified", "per_example"), threads=1, world_size=(2,))
    return cases + _standard_training_steps()


def _standard_training_steps() -> list[Case]:
    # The training step a user runs, for every workload: the MLP at batch 1 and 64 per
    # example (the paper's CPU setting), one linear layer, the paper's POS LSTM (h=500,
    # batch 1 sentence, k=5 of the 2000 gate entries) and a GPT-2-style block (d=512,
    # 8 sequences of 64 tokens), each next to its backward.
    cases = grid(workload=("mlp",), measurement=("train_step",), k_ratio=(0.01, 0.1),
                 hidden=(500, 4096), batch=(1, 64), mode=("per_example",))
    # lazy next to exact (torch.optim's algorithm on meProp's gradients), k = 1%
    cases += [c.replace(optimizer="exact") for c in cases if c.k_ratio < 0.02]
    # and against the strongest dense baseline: fused Adam on both sides, k = 1%
    cases += [c.replace(adam="fused") for c in cases if c.k_ratio < 0.02 and c.optimizer == "lazy"]
    cases += grid(workload=("linear",), measurement=("train_step",), k_ratio=(0.01, 0.1),
                  hidden=(1024, 4096), batch=(64,), mode=("unified", "per_example"))
    cases += grid(workload=("lstm",), measurement=("linear_backward", "train_step"), k=(5, 20),
                  hidden=(500,), batch=(1,), mode=("per_example",), threads=1)
    cases += grid(workload=("transformer",), measurement=("overall_backward", "train_step"),
                  k_ratio=(0.04, 0.1), hidden=(512,), batch=(8,), mode=("unified", "per_example"))
    # every other workload's step against fused Adam too, at its smallest k (the MLP's above)
    others = [c for c in cases if c.measurement == TRAIN_STEP.name and c.adam == "default"
              and not any(d.adam == "fused" and d.workload == c.workload for d in cases)]
    cases += [c.replace(adam="fused") for c in others
              if c.k == min(d.k for d in others if d.workload == c.workload and d.hidden == c.hidden)]
    return cases


def _paper() -> list[Case]:
    # Tables 1-2: h=500 MLP (784-500-500-10), k 5/10/20/80, batch 1/10/50 (CPU, per-example).
    cases = grid(workload=("linear", "mlp"), measurement=("linear_backward", "overall_backward"),
                 hidden=(500,), k=(5, 10, 20, 80), batch=(1, 10, 50),
                 mode=("per_example", "unified"))
    cases += grid(workload=("mlp",), measurement=("forward",), hidden=(500,), k=(20,),
                  batch=(1, 10, 50), mode=("per_example",))
    # Table 7: synthetic 8192 x 8192 layer, batch 1024, k 8..512 (unified).
    table7_k = (8, 16, 32, 64, 128, 256, 512)
    cases += grid(measurement=("linear_backward",), hidden=(8192,), k=table7_k, batch=(1024,),
                  mode=("unified",))
    # Table 8: MLP 784-8192-8192-10, overall backprop, batch 1024 (unified).
    cases += grid(workload=("mlp",), measurement=("overall_backward",), hidden=(8192,),
                  k=table7_k, batch=(1024,), mode=("unified",))
    # Table 2's forward / backward / total view of the MNIST MLP: its training step.
    cases += grid(workload=("mlp",), measurement=("train_step",), hidden=(500,), k=(5, 10, 20, 80),
                  batch=(1, 10, 50), mode=("per_example",), threads=1)
    # Tables 1-2, POS tagging: the LSTM (h=500, batch 1 sentence of 25 tokens, k among its
    # 2000 gate entries), its backward, overall backward and training step, 1 thread.
    cases += grid(workload=("lstm",), measurement=("linear_backward", "overall_backward", "train_step"),
                  hidden=(500,), k=(5, 10, 20, 80), batch=(1,), mode=("per_example",), threads=1)
    return cases


def _optimizers() -> list[Case]:
    # The step a user gets with the optimizer they keep: every torch optimizer arm on both
    # sides, and meprop.optim.Adam(lazy=True) against torch.optim.Adam (default and fused).
    cases = grid(workload=("mlp",), measurement=(TRAIN_STEP.name,), hidden=(500, 4096), k=(20,), batch=(10,),
                 mode=("per_example", "unified"), threads=1)
    arms = [{"optimizer": name} for name in TORCH_OPTIMIZER_NAMES]
    arms += [{"optimizer": "lazy", "adam": adam} for adam in ("default", "fused")]
    return [case.replace(**arm) for case in cases for arm in arms]


def _full() -> list[Case]:
    ratios = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
    common = dict(k_ratio=ratios, batch=(1, 16, 64, 256, 1024), device=("cpu", "cuda"),
                  mode=("per_example", "unified"))
    cases = grid(measurement=("forward", "linear_backward", "overall_backward"),
                 hidden=(500, 1024, 2048, 4096, 8192), **common)
    cases += grid(workload=("mlp",), measurement=("overall_backward", "train_step"),
                  hidden=(500, 1024, 4096, 8192), **common)
    return cases


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("smoke", "a few tiny cases, seconds in all (CI)", _smoke,
                TimingOptions(budget_s=0.02, warmup_s=0.0, min_samples=3, max_samples=10), fuller="quick"),
        Profile("quick", "each report section's representative cells, 2 threads (the default; ~1.5 min on 2 cores)",
                _quick, TimingOptions(budget_s=0.6, warmup_s=0.05, min_samples=3, max_samples=100, extend_factor=2.0),
                fuller="standard"),
        Profile("standard", "hidden {500,1024,4096} x k ratio {1,4,10,50}% x batch {1,64,1024}, cpu (~10 min)",
                _standard, TimingOptions(budget_s=0.6, warmup_s=0.05, min_samples=3, max_samples=100, extend_factor=2.0),
                fuller="full"),
        Profile("paper", "the paper's shapes: h=500 (Tables 1-2), h=8192 B=1024 (Tables 7-8)",
                _paper, TimingOptions(budget_s=2.0, warmup_s=0.1, min_samples=5, max_samples=200, extend_factor=2.0)),
        Profile("full", "hidden 500..8192 x k ratio 0.5%..100% x batch 1..1024, cpu and cuda (hours)",
                _full, TimingOptions(budget_s=1.5, warmup_s=0.1, min_samples=5, max_samples=200, extend_factor=2.0)),
        # warm-up: the optimizers' state (second moments that stay zero, decay) settles over
        # hundreds of steps; a step at h=500 takes about 1 ms
        Profile("optimizers", "the MLP's training step with every torch optimizer, h=500 and 4096, batch 10, k=20",
                _optimizers, TimingOptions(budget_s=1.0, warmup_s=1.0, min_samples=7, max_samples=300,
                                           extend_factor=1.0)),
        Profile("perf", "every case of a targets file (default benchmarks/targets.toml)", list,
                TimingOptions(budget_s=4.0, warmup_s=0.2, min_samples=7, max_samples=300, extend_factor=2.0), uses_targets=True),
    )
}


def profile_cases(name: str, targets: tuple[Target, ...] | None = None) -> list[Case]:
    """The cases of the named profile (one of :data:`PROFILES`); ``targets`` for the ``perf`` profile."""
    check_choice(name, "profile", PROFILES)
    return PROFILES[name].cases(targets)

