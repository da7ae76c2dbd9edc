"""Training loop of the paper's accuracy experiments (Section 4, Tables 1-5), dense or with meProp.

Protocol (the paper's): train for ``epochs`` passes over the training set; after each
epoch score the dev and test sets; the reported result is the test score at the epoch
with the best dev score (ties: the earliest). Seeds are fixed and recorded (weights,
shuffling, dropout and random-k all draw from ``seed``).

Each epoch's time is split like the paper's Table 2, measured with
:class:`meprop.lab.stopwatch.Stopwatch` (the engine's device-synchronised stopwatch):
``forward`` (model forward and loss), ``backward`` (``loss.backward()``: the paper's
overall backprop) and ``update`` (``optimizer.step()`` and ``zero_grad``); evaluation
time is kept apart (``eval``).

One ``type: "train"`` record (docs/results_schema.md) is appended and flushed when an
epoch ends, so an interrupted run keeps the epochs it finished. Gradients are zeroed
with ``set_to_none=False`` for dense and meProp alike, so autograd accumulates meProp's
row-sparse gradients into the existing ``.grad`` in place.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

import meprop.optim
from meprop.checks import check_choice, check_device, check_int_at_least, check_real
from meprop.functional import BIAS_GRADS
from meprop.lab.ops.models import INITS, check_dropout
from meprop.lab.results import schema
from meprop.lab.results.store import new_run_id
from meprop.selection import MODES
from meprop.lab.stopwatch import Stopwatch, num_threads

__all__ = ["TASKS", "OPTIMIZERS", "DEFAULT_LR", "EVAL_BATCH", "TrainConfig", "TrainResult", "train", "run_key", "check_ready",
           "build_task", "make_optimizer", "task_loss",
           "check_device", "check_device_available"]

TASKS = ("mnist", "pos", "synthetic")
OPTIMIZERS = ("adam", "adagrad")
#: ``exact``: the torch.optim algorithm (the paper's setting); ``lazy``: meprop.optim's row
#: updates of the meProp weights (Adam only).
OPTIMIZER_MODES = ("exact", "lazy")
#: Learning rates used when ``lr`` is None (torch's defaults).
DEFAULT_LR = {"adam": 1e-3, "adagrad": 1e-2}
EVAL_BATCH = {"mnist": 1000, "synthetic": 1000, "pos": 256}


@dataclass(frozen=True)
class TrainConfig:
    """One training run. ``k=None`` is the dense baseline; ``limit`` keeps the first
    ``limit`` examples (sentences for POS) of each split for quick runs; ``bias_grad``
    is the MLP meProp layers' bias gradient (``"sparse"`` or ``"dense"``, the authors'
    choice; see :func:`meprop.meprop_linear`) and ``init`` the MLP's initialisation
    (:data:`meprop.lab.ops.models.INITS`)."""

    task: str
    k: int | None = None
    mode: str = "per_example"
    output_k: int | None = None
    optimizer: str = "adam"
    optimizer_mode: str = "exact"
    lr: float | None = None
    epochs: int = 20
    batch: int = 10
    hidden: int = 500
    layers: int = 2
    dropout: float = 0.0
    embed: int = 100
    seed: int = 1
    limit: int | None = None
    threads: int = 1
    device: str = "cpu"
    bias_grad: str = "sparse"
    init: str = "torch"

    def __post_init__(self) -> None:
        check_choice(self.task, "task", TASKS)
        check_choice(self.bias_grad, "bias_grad", BIAS_GRADS)
        check_choice(self.init, "init", INITS)
        check_choice(self.optimizer, "optimizer", OPTIMIZERS)
        check_choice(self.optimizer_mode, "optimizer_mode", OPTIMIZER_MODES)
        if self.optimizer_mode == "lazy" and (self.optimizer != "adam" or self.k is None):
            raise ValueError(
                f"optimizer_mode='lazy' needs optimizer='adam' and a meProp run (k given), got "
                f"optimizer={self.optimizer!r}, k={self.k!r}"
            )
        check_choice(self.mode, "mode", MODES)
        for name in ("epochs", "batch", "hidden", "layers", "embed", "threads"):
            check_int_at_least(getattr(self, name), name, 1)
        check_int_at_least(self.seed, "seed", 0)
        for name in ("k", "output_k", "limit"):
            if getattr(self, name) is not None:
                check_int_at_least(getattr(self, name), name, 1)
        lr_accepted = "a positive float or None (optimizer default)"
        if self.lr is not None and not 0 < check_real(self.lr, "lr", lr_accepted) < math.inf:
            raise ValueError(f"lr must be {lr_accepted}, got {self.lr!r}")
        check_dropout(self.dropout)
        if self.task == "pos" and self.output_k is not None:
            raise ValueError("output_k applies to the MLP tasks only (the POS classifier is dense, as in the paper)")
        for name, default in _MLP_ONLY.items():
            if self.task == "pos" and getattr(self, name) != default:
                raise ValueError(f"{name} applies to the MLP tasks only, got {getattr(self, name)!r} for task 'pos'")
        check_device(self.device)

    @property
    def method(self) -> str:
        return "dense" if self.k is None else "meprop"

    @property
    def learning_rate(self) -> float:
        return DEFAULT_LR[self.optimizer] if self.lr is None else float(self.lr)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "method": self.method, "lr": self.learning_rate}


def check_device_available(device: str, name: str = "device") -> None:
    """Refuse a CUDA device this machine does not have (no CUDA, or index out of range)."""
    dev = torch.device(check_device(device, name))
    if dev.type != "cuda":
        return
    if not torch.cuda.is_available():
        raise ValueError(f"{name} {device!r} requested but CUDA is not available "
                         f"(torch {torch.__version__}); accepted here: 'cpu'")
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise ValueError(f"{name} {device!r} requested but this machine has {count} CUDA device(s); "
                         f"accepted: 'cpu', 'cuda', 'cuda:0' ... 'cuda:{count - 1}'")


#: Fields added after results were first recorded, left out of :func:`run_key` at these
#: values so the keys of earlier records (and ``--resume``) stay valid.
_KEY_OMIT_AT = {"bias_grad": "sparse", "init": "torch", "optimizer_mode": "exact"}
#: MLP-only options, at their defaults for the POS task.
_MLP_ONLY = {"bias_grad": "sparse", "init": "torch"}


def run_key(config: TrainConfig, preset: str = "custom") -> str:
    """A stable id of ``(preset, config)``: finished runs with this key are skipped by ``--resume``."""
    settings = {name: value for name, value in config.to_dict().items()
                if not (name in _KEY_OMIT_AT and value == _KEY_OMIT_AT[name])}
    blob = json.dumps(settings, sort_keys=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
    k = "dense" if config.k is None else f"k{config.k}-{config.mode}"
    return f"train/{preset}/{config.task}/h{config.hidden}/{k}/{digest}"


@dataclass
class TrainResult:
    """What a run found: the best-dev epoch and its test score, plus every epoch record."""

    config: TrainConfig
    records: list[dict] = field(default_factory=list)

    @property
    def best(self) -> dict:
        if not self.records:
            raise ValueError("no epoch finished")
        return max(self.records, key=lambda r: (r["dev_score"], -r["epoch"]))

    @property
    def best_epoch(self) -> int:
        return self.best["epoch"]

    @property
    def test_score(self) -> float:
        return self.best["test_score"]


# ----------------------------------------------------------------------------- task set-up
def check_ready(config: TrainConfig) -> None:
    """Fail early (before any result is written) if ``config`` cannot run: a CUDA device this
    machine lacks, a k larger than its layer, or the task's data not installed (the error
    names the set-up command)."""
    from meprop.lab.paper import data as datasets
    from meprop.lab.ops.models import MLP, PosTagger

    check_device_available(config.device)
    if config.task == "mnist":
        datasets.mnist_path()
        MLP(784, config.hidden, config.layers, 10, k=config.k, mode=config.mode, output_k=config.output_k,
            bias_grad=config.bias_grad, init=config.init)
    elif config.task == "synthetic":
        MLP(32, config.hidden, config.layers, 4, k=config.k, mode=config.mode, output_k=config.output_k)
    else:
        datasets.pos_path()
        PosTagger(2, 2, embed=config.embed, hidden=config.hidden, k=config.k, mode=config.mode)


def build_task(config: TrainConfig, data):
    """Model, training examples, a batch iterator factory and a scorer for ``config.task``."""
    from meprop.lab.paper import data as datasets
    from meprop.lab.ops.models import MLP, PosTagger

    if config.task == "pos":
        corpus = data if data is not None else datasets.load_pos(limit=config.limit)
        model = PosTagger(len(corpus.words), len(corpus.tags), embed=config.embed, hidden=config.hidden,
                          k=config.k, mode=config.mode, dropout=config.dropout)
        return model, corpus.splits, _sequence_batches, _tagging_scores
    if data is not None:
        splits = data
    elif config.task == "mnist":
        splits = datasets.load_mnist(limit=config.limit)
    else:
        size = config.limit or 2000
        splits = datasets.make_synthetic(size, max(1, size // 4), seed=config.seed)
    x, y = splits.train.tensors
    classes = int(max(int(s.tensors[1].max()) for s in (splits.train, splits.dev, splits.test))) + 1
    model = MLP(x.shape[1], config.hidden, config.layers, max(classes, 2), k=config.k, mode=config.mode,
                output_k=config.output_k, dropout=config.dropout, bias_grad=config.bias_grad,
                init=config.init)
    return model, splits, _tensor_batches, _classification_scores


def _tensor_batches(dataset, batch: int, generator: torch.Generator | None, device):
    x, y = dataset.tensors  # (N, F), (N,)
    order = torch.randperm(len(y), generator=generator) if generator is not None else torch.arange(len(y))
    for start in range(0, len(y), batch):
        index = order[start:start + batch]
        yield (x[index].to(device),), y[index].to(device), len(index)


def _sequence_batches(sentences, batch: int, generator: torch.Generator | None, device):
    from meprop.lab.paper.data import pad_batch

    order = torch.randperm(len(sentences), generator=generator) if generator is not None else range(len(sentences))
    order = [int(i) for i in order]
    for start in range(0, len(order), batch):
        words, lengths, tags = pad_batch([sentences[i] for i in order[start:start + batch]])
        yield (words.to(device), lengths.to(device)), tags.to(device), len(lengths)


def task_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from meprop.lab.paper.data import IGNORE_INDEX

    # logits: (B, C) or (B, T, C); target: (B,) or (B, T)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE_INDEX)


@torch.no_grad()
def _classification_scores(model, dataset, batch, device) -> float:
    correct = total = 0
    for inputs, target, _ in _tensor_batches(dataset, batch, None, device):
        correct += int((model(*inputs).argmax(-1) == target).sum())
        total += len(target)
    return 100.0 * correct / max(total, 1)


@torch.no_grad()
def _tagging_scores(model, sentences, batch, device) -> float:
    """Per-word accuracy (%), padding excluded."""
    from meprop.lab.paper.data import IGNORE_INDEX

    correct = total = 0
    for inputs, target, _ in _sequence_batches(sentences, batch, None, device):
        valid = target != IGNORE_INDEX  # (B, T)
        correct += int(((model(*inputs).argmax(-1) == target) & valid).sum())
        total += int(valid.sum())
    return 100.0 * correct / max(total, 1)


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer_mode == "lazy":
        return meprop.optim.Adam(model.parameters(), lr=config.learning_rate, lazy=True)
    cls = {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad}[config.optimizer]
    return cls(model.parameters(), lr=config.learning_rate)


# ----------------------------------------------------------------------------- the loop
def train(
    config: TrainConfig,
    *,
    writer=None,
    run_id: str | None = None,
    preset: str = "custom",
    label: str | None = None,
    progress: bool = True,
    data=None,
) -> TrainResult:
    """Train ``config`` and return its :class:`TrainResult`.

    Args:
        writer: a :class:`meprop.lab.results.store.ResultsWriter` (or anything with
            ``write(record)``); each epoch's record is written when the epoch ends.
        run_id: the invocation's run id (ties records to its ``env`` record).
        preset, label: recorded with each epoch (``label`` names the run in tables,
            e.g. ``"meProp k=20"``).
        progress: show a tqdm bar per epoch.
        data: use these splits instead of loading the task's data (tests): a
            :class:`meprop.lab.paper.data.Splits` of TensorDatasets, or a :class:`meprop.lab.paper.data.PosData`.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    check_device_available(config.device)
    device = torch.device(config.device)
    run = _Run(config, device, run_id or new_run_id(), preset,
               label or ("dense" if config.k is None else f"meProp k={config.k}"), progress)
    result = TrainResult(config)
    with num_threads(config.threads):
        torch.manual_seed(config.seed)
        model, splits, batches, score = build_task(config, data)
        model.to(device)
        optimizer = make_optimizer(config, model)
        shuffle = torch.Generator().manual_seed(config.seed)
        for epoch in range(1, config.epochs + 1):
            loss, samples = run.train_epoch(epoch, model, optimizer, batches(splits.train, config.batch, shuffle,
                                                                               device), len(splits.train))
            model.eval()
            with run.watches["eval"]:
                dev = score(model, splits.dev, EVAL_BATCH[config.task], device)
                test = score(model, splits.test, EVAL_BATCH[config.task], device)
            record = run.epoch_record(epoch, loss, samples, dev, test)
            if writer is not None:
                writer.write(record)
            result.records.append(record)
    return result


@dataclass
class _Run:
    """One training run's bookkeeping: stopwatches, the best epoch so far, the epoch records."""

    config: TrainConfig
    device: torch.device
    run_id: str
    preset: str
    label: str
    progress: bool
    best: tuple | None = None
    watches: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.key = run_key(self.config, self.preset)
        self.watches = {name: Stopwatch(self.device) for name in ("forward", "backward", "update", "eval")}

    def train_epoch(self, epoch: int, model, optimizer, batches, size: int) -> tuple[float, int]:
        """One pass over the training batches; returns (summed loss, examples)."""
        from tqdm.auto import tqdm

        for watch in self.watches.values():
            watch.reset()
        model.train()
        loss_sum, samples = 0.0, 0
        bar = tqdm(total=size, desc=f"{self.label} epoch {epoch}/{self.config.epochs}",
                   unit="ex", disable=not self.progress, leave=False, mininterval=1.0)
        for inputs, target, count in batches:
            with self.watches["forward"]:
                loss = task_loss(model(*inputs), target)
            with self.watches["backward"]:
                loss.backward()
            with self.watches["update"]:
                optimizer.step()
                optimizer.zero_grad(set_to_none=False)
            loss_sum += float(loss.detach()) * count
            samples += count
            bar.update(count)
        bar.close()
        return loss_sum, samples

    def epoch_record(self, epoch: int, loss_sum: float, samples: int, dev: float, test: float) -> dict:
        """The epoch's ``train`` record (docs/results_schema.md); prints a line with ``progress``."""
        if self.best is None or dev > self.best[1]:
            self.best = (epoch, dev, test)
        train_loss = loss_sum / max(samples, 1)
        record = schema.train_record(
            self.run_id, key=f"{self.key}/epoch{epoch}", run_key=self.key,
            task=self.config.task, preset=self.preset, label=self.label, config=self.config.to_dict(),
            epoch=epoch, train_loss=train_loss if math.isfinite(train_loss) else None,  # JSON has no NaN
            dev_score=dev, test_score=test, best_epoch_so_far=self.best[0],
            best_dev_so_far=self.best[1], test_at_best_so_far=self.best[2],
            time_s={name: watch.elapsed for name, watch in self.watches.items()}, samples=samples,
        )
        if self.progress:
            from tqdm.auto import tqdm

            tqdm.write(f"{self.label}: epoch {epoch} loss {train_loss:.4f} "
                       f"dev {dev:.2f} test {test:.2f} (best epoch {self.best[0]})")
        return record
