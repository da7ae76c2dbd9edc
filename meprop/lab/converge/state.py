"""The state of a time-to-accuracy run (:mod:`meprop.lab.converge.loop`): each variant's
batch stream, its progress, and saving / restoring all of it for ``--resume``.

- :class:`BatchStream`: the batches of ``workload.batches(epoch, generator)`` epoch after
  epoch; epoch ``e`` draws from a generator seeded by ``(seed, e)`` and from the global RNG
  set to the same seed, so every stream with the same seed yields the same batches in the
  same order, and a stream can be rebuilt at any ``(epoch, position)`` by replaying its epoch.
- :class:`VariantRun`: one variant's model and optimizer (a ``Trainee``), stream, training
  clock, steps, examples, best metric and status.
- :func:`save_state` / :func:`load_state`: one ``torch.save`` file (written to a temporary
  name, then renamed) holding every variant's model (error-feedback memories included),
  optimizer, remedies (the k schedule's step, the sampling generator's state), clock, stream
  position and RNG state after a round, and whether the run finished.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["BatchStream", "VariantRun", "save_state", "load_state", "check_manifest", "ResumeMismatch"]


class ResumeMismatch(ValueError):
    """A ``--resume`` asking for other settings than the run on disk (the message names them)."""


def check_manifest(folder: Path, name: str, manifest: dict, resume: bool) -> None:
    """Keep ``manifest`` (the settings of a multi-seed run: seeds, targets, lr grid, variants,
    length) beside the state; a resume whose settings differ from the saved ones is refused
    naming each difference (a fresh run writes it anew)."""
    path = Path(folder) / (_safe(name) + ".settings.json")
    manifest = json.loads(json.dumps(manifest, default=str))
    if resume and path.exists():
        saved = json.loads(path.read_text())
        changed = [f"{key} {saved.get(key)!r} -> {manifest.get(key)!r}" for key in sorted(set(saved) | set(manifest))
                   if saved.get(key) != manifest.get(key)]
        if changed:
            shown = "; ".join(c if len(c) < 160 else c[:157] + "..." for c in changed)
            raise ResumeMismatch(f"--resume: the run of {name!r} on disk has other settings ({shown}); "
                                 f"give the same ones, or another --out for a new run")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


class BatchStream:
    """Batches of ``workload`` in a fixed order: ``next()`` moves on to the next epoch when one ends."""

    def __init__(self, workload, seed: int) -> None:
        self.workload, self.seed = workload, seed
        self.epoch, self.position = 0, 0
        self._iterator = None
        self._rng = None

    def _open(self, epoch: int) -> None:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + epoch)
            self._iterator = iter(self.workload.batches(epoch, generator))
            self._rng = torch.get_rng_state()
        self.epoch, self.position = epoch, 0

    def _pull(self):
        with torch.random.fork_rng(devices=[]):  # a DataLoader's shuffle draws from the global RNG
            torch.set_rng_state(self._rng)
            try:
                return next(self._iterator)
            finally:
                self._rng = torch.get_rng_state()

    def next(self):
        if self._iterator is None:
            self._open(self.epoch)
        try:
            batch = self._pull()
        except StopIteration:
            if self.position == 0:
                raise ValueError(f"{self.workload.name}: the training data yields no batch") from None
            self._open(self.epoch + 1)
            batch = self._pull()
        self.position += 1
        return batch

    def seek(self, epoch: int, position: int) -> None:
        """Continue at batch ``position`` of ``epoch`` (replays the epoch up to there)."""
        self._open(epoch)
        for _ in range(position):
            self._pull()
        self.position = position


@dataclass
class VariantRun:
    """One variant's progress; ``clock`` is its cumulative training time in seconds."""

    variant: object
    trainee: object
    stream: BatchStream
    rng: torch.Tensor
    step: int = 0
    examples: int = 0
    clock: float = 0.0
    block_time: float = 0.0
    block_loss: float = float("nan")
    best: float | None = None
    since_best: int = 0
    status: str = "ok"
    reason: str | None = None
    pending: bool = False

    @property
    def active(self) -> bool:
        return self.status == "ok"

    def stop(self, status: str, reason: str) -> None:
        self.status, self.reason = status, reason

    def observe(self, metric: float) -> None:
        if self.best is None or metric > self.best:
            self.best, self.since_best = metric, 0
        else:
            self.since_best += 1

    def snapshot(self) -> dict:
        trainee = self.trainee
        remedies = getattr(trainee, "remedies", None)
        return {"model": trainee.model.state_dict(), "optimizer": trainee.optimizer.state_dict(),
                "remedies": None if remedies is None else remedies.state_dict(), "rng": self.rng,
                "epoch": self.stream.epoch, "position": self.stream.position,
                **{name: getattr(self, name) for name in _SCALARS}}

    def restore(self, saved: dict) -> None:
        self.trainee.model.load_state_dict(saved["model"])
        self.trainee.optimizer.load_state_dict(saved["optimizer"])
        remedies = getattr(self.trainee, "remedies", None)
        if remedies is not None and saved.get("remedies") is not None:  # the schedule's step, the sampler's RNG
            remedies.load_state_dict(saved["remedies"])
        self.rng = saved["rng"]
        self.stream.seek(saved["epoch"], saved["position"])
        for name in _SCALARS:
            setattr(self, name, saved[name])


_SCALARS = ("step", "examples", "clock", "block_time", "block_loss", "best", "since_best", "status", "reason")


def save_state(path: Path, key: str, runs: dict, finished: bool) -> None:
    """Write every variant's state after a round (atomically: a temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    torch.save({"key": key, "finished": finished,
                "variants": {label: run.snapshot() for label, run in runs.items()}}, temporary)
    os.replace(temporary, path)


def load_state(path: Path, key: str, runs: dict | None) -> tuple[dict, bool]:
    """Restore ``runs`` from ``path``; returns (the runs, finished). Refuses another run's state."""
    saved = torch.load(path, weights_only=False)
    if saved.get("key") != key:
        raise ValueError(f"{path} holds the state of run {saved.get('key')!r}, not of {key!r} "
                         f"(other settings): use another --out or drop --resume")
    if runs is None:
        return {label: state for label, state in saved["variants"].items()}, saved["finished"]
    missing = set(runs) - set(saved["variants"])
    if missing:
        raise ValueError(f"{path} lacks the state of variant(s) {sorted(missing)}")
    for label, run in runs.items():
        run.restore(saved["variants"][label])
    return runs, saved["finished"]
