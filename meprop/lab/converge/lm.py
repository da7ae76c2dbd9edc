"""The ``lm`` workload of ``meprop converge``: a small character-level transformer language model.

Text: the words of the POS corpus (``data/tagged-en-oanc.txt``, offline), one sentence per
line, words joined by spaces; sentence ``i`` goes to dev when ``i % 10 == 8`` (as in
:func:`meprop.lab.paper.data.load_pos`), the rest except ``i % 10 == 9`` (test) to train.
Characters seen in training are the vocabulary (id 0: any other character).

Model (:class:`CharLM`): token and position embeddings (``d``), :data:`LAYERS` GPT-2-style
pre-LN blocks (:class:`meprop.lab.ops.transformer.TransformerBlock`, heads of
:data:`HEAD_DIM`), a final LayerNorm and a linear head to the vocabulary. meProp goes on
through :func:`meprop.convert`: every projection of the blocks (qkv, proj, fc, out) keeps
``k / d`` of its outputs per token; the head stays dense (the paper's output layer).

Training: windows of :data:`SEQUENCE` + 1 characters (non-overlapping), shuffled per epoch,
:data:`BATCH` windows per step, cross-entropy of the next character, Adam (lr 1e-3).
Adam is torch's fastest implementation (:mod:`meprop.lab.converge.optimizers`).
Dev metric: next-character accuracy (%) over the first ``dev_windows`` dev windows.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from meprop.lab.ops.transformer import TransformerBlock
from meprop.nn import convert
from meprop.lab.converge.loop import ConvergenceError, Trainee
from meprop.lab.converge.optimizers import make_optimizer

__all__ = ["CharLM", "CharLMWorkload", "SEQUENCE", "BATCH", "HEAD_DIM", "LAYERS"]

SEQUENCE = 64
BATCH = 8
HEAD_DIM = 32
LAYERS = 2


class CharLM(nn.Module):
    """``ids (B, T)`` -> next-character logits ``(B, T, vocab)``."""

    def __init__(self, vocab: int, d: int = 128, layers: int = LAYERS, context: int = SEQUENCE) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.position = nn.Embedding(context, d)
        self.blocks = nn.Sequential(*(TransformerBlock(d, HEAD_DIM) for _ in range(layers)))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)  # (T,)
        x = self.embed(ids) + self.position(positions)  # (B, T, d)
        return self.head(self.norm(self.blocks(x)))  # (B, T, vocab)


def _texts(limit_chars: int | None) -> tuple[str, str]:
    from meprop.lab.paper import data as datasets

    sentences = datasets.read_tagged_sentences(datasets.pos_path())
    parts: dict[int, list[str]] = {0: [], 8: []}
    for i, sentence in enumerate(sentences):
        bucket = i % 10
        if bucket != 9:
            parts[8 if bucket == 8 else 0].append(" ".join(word for word, _ in sentence))
    train, dev = "\n".join(parts[0]), "\n".join(parts[8])
    return (train[:limit_chars], dev[:limit_chars]) if limit_chars else (train, dev)


def _windows(text: str, index: dict[str, int]) -> torch.Tensor:
    ids = torch.tensor([index.get(c, 0) for c in text], dtype=torch.long)
    count = (len(ids) - 1) // (SEQUENCE + 1)
    return ids[:count * (SEQUENCE + 1)].view(count, SEQUENCE + 1)  # (N, T + 1)


class CharLMWorkload:
    """The workload object (protocol: :mod:`meprop.lab.converge.paper_workload`)."""

    name = "lm"
    metric = "dev next-char accuracy (%)"
    metric_range = (0.0, 100.0)
    supports = frozenset({"schedule", "error_feedback"})  # per projection (meprop.lab.converge.remedies)

    def __init__(self, quick: bool = False, d: int = 128, lr: float = 1e-3) -> None:
        self.quick, self.d, self.lr = quick, d, lr
        self.limit_chars = 120_000 if quick else None
        self.dev_windows = 64 if quick else 512
        self._train = self._dev = None
        self._vocab = 0

    def settings(self) -> dict:
        return {"d": self.d, "layers": LAYERS, "sequence": SEQUENCE, "batch": BATCH, "lr": self.lr,
                "limit_chars": self.limit_chars, "dev_windows": self.dev_windows, "threads": 1}

    def _load(self) -> None:
        train, dev = _texts(self.limit_chars)
        alphabet = sorted(set(train))
        index = {c: i + 1 for i, c in enumerate(alphabet)}
        self._vocab = len(alphabet) + 1
        self._train = _windows(train, index)
        self._dev = _windows(dev, index)[:self.dev_windows]

    def build(self, variant) -> Trainee:
        if variant.k is not None and not 1 <= variant.k < self.d:
            raise ConvergenceError(f"--k {variant.k}: k must be an integer in [1, {self.d - 1}] (the model's "
                                   f"width is d={self.d}; k >= d trains dense)")
        if self._train is None:
            self._load()
        model = CharLM(self._vocab, self.d)
        if variant.k is not None:
            model = convert(model, k_ratio=min(1.0, variant.k / self.d), mode=variant.mode,
                            example_inputs=(self._train[:1, :-1],), inplace=True)
        optimizer, how = make_optimizer("adam", model.parameters(), variant.lr or self.lr,
                                        lazy=variant.k is not None and variant.optimizer_mode == "lazy")

        def loss(batch):
            logits = model(batch[0])  # (B, T, vocab)
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[1].reshape(-1))
        return Trainee(model, optimizer, loss, how)

    def steps_per_epoch(self) -> int:
        return -(-len(self._train) // BATCH)

    def batches(self, epoch: int, generator: torch.Generator):
        order = torch.randperm(len(self._train), generator=generator)
        for start in range(0, len(order), BATCH):
            window = self._train[order[start:start + BATCH]]  # (B, T + 1)
            yield window[:, :-1], window[:, 1:]

    def evaluate(self, model: nn.Module) -> float:
        correct = total = 0
        for start in range(0, len(self._dev), 64):
            window = self._dev[start:start + 64]
            predicted = model(window[:, :-1]).argmax(-1)  # (B, T)
            correct += int((predicted == window[:, 1:]).sum())
            total += predicted.numel()
        return 100.0 * correct / max(total, 1)
