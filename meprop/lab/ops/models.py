"""The paper's models (Section 4): the MNIST MLP and the POS-tagging LSTM, dense or with meProp.

The one definition of the paper's MLP: the training experiments (:mod:`meprop.lab.paper.train`),
the benchmark workloads (:mod:`meprop.lab.ops.build`) and scripts/mnist_adam_probe.py
all build it from here.

- :class:`MLP`: ``784 -> hidden x layers -> 10`` with ReLU and optional dropout. With
  ``k`` set, every hidden linear layer is a :class:`~meprop.MepropLinear` keeping k of
  its ``hidden`` output-gradient entries; the output layer is dense (the paper's setting)
  or keeps its own ``output_k``. With ``k=None`` all layers are ``nn.Linear`` (the dense
  baseline).
- :class:`PosTagger`: word embeddings -> :class:`~meprop.lstm.MepropLSTM` (h=500 in the
  paper) -> a dense tag classifier, one tag per word.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from meprop.checks import check_choice, check_positive_int, check_real
from meprop.lstm import MepropLSTM
from meprop.nn import MepropLinear

__all__ = ["MLP", "PosTagger", "INITS", "check_dropout"]

#: MLP weight initialisations: ``torch`` (nn.Linear's own: uniform(+-1/sqrt(in_features))),
#: ``release`` (the authors' PyTorch release: weights and biases uniform(+-1/sqrt(out_features)),
#: so the 500 -> 10 output layer starts ~7x larger), ``glorot`` (the authors' C# code:
#: Glorot-normal weights, zero biases).
INITS = ("torch", "release", "glorot")


def check_dropout(p: object, name: str = "dropout") -> float:
    """Return ``p`` as a float if it is a probability in [0, 1) (TypeError for a non-number)."""
    if not 0.0 <= check_real(p, name, "a float in [0, 1)") < 1.0:  # also refuses NaN
        raise ValueError(f"{name} must be a float in [0, 1), got {p!r}")
    return float(p)


def _linear(in_features: int, out_features: int, k: int | None, mode: str, name: str,
            bias_grad: str = "sparse") -> nn.Linear:
    if k is None:
        return nn.Linear(in_features, out_features)
    try:
        return MepropLinear(in_features, out_features, k=k, mode=mode, bias_grad=bias_grad)
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None


@torch.no_grad()
def _initialise(layer: nn.Linear, init: str) -> None:
    if init == "release":
        bound = layer.out_features ** -0.5
        layer.weight.uniform_(-bound, bound)
        layer.bias.uniform_(-bound, bound)
    elif init == "glorot":
        nn.init.xavier_normal_(layer.weight)
        layer.bias.zero_()


class MLP(nn.Module):
    """``in_features -> hidden x layers -> classes`` MLP; meProp on the hidden layers when ``k`` is set.

    Args:
        k: entries kept per example in each hidden layer's output gradient, in
            [1, hidden]; None: dense.
        mode: meProp selection mode (``per_example``, ``unified``, ``random``).
        output_k: the output layer's own k in [1, classes]; None: dense output layer.
        dropout: probability in [0, 1) applied after each hidden ReLU.
        bias_grad: the meProp layers' bias gradient: ``"sparse"`` (the kept entries
            only) or ``"dense"`` (the full output gradient, as both of the authors'
            implementations do); see :func:`meprop.meprop_linear`.
        init: weight initialisation, one of :data:`INITS`.
    """

    def __init__(
        self,
        in_features: int = 784,
        hidden: int = 500,
        layers: int = 2,
        classes: int = 10,
        *,
        k: int | None = None,
        mode: str = "per_example",
        output_k: int | None = None,
        dropout: float = 0.0,
        bias_grad: str = "sparse",
        init: str = "torch",
    ) -> None:
        super().__init__()
        check_choice(init, "init", INITS)
        in_features = check_positive_int(in_features, "in_features")
        hidden = check_positive_int(hidden, "hidden")
        layers = check_positive_int(layers, "layers")
        classes = check_positive_int(classes, "classes")
        dropout = check_dropout(dropout)
        blocks: list[nn.Module] = []
        width = in_features
        for index in range(layers):
            blocks.append(_linear(width, hidden, k, mode, f"hidden layer {index}", bias_grad))
            blocks.append(nn.ReLU())
            if dropout > 0:
                blocks.append(nn.Dropout(dropout))
            width = hidden
        blocks.append(_linear(width, classes, output_k, mode, "output layer", bias_grad))
        self.net = nn.Sequential(*blocks)
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                _initialise(layer, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))  # (B, in_features) -> (B, classes)


class PosTagger(nn.Module):
    """Embeddings -> MepropLSTM -> dense classifier: ``words (B, T)`` -> tag logits ``(B, T, tags)``.

    Args:
        vocab, tags: vocabulary size (id 0 is padding) and number of tags.
        embed: embedding size; hidden: LSTM hidden size (500 in the paper).
        k: entries kept per step among the LSTM's 4 * hidden gate pre-activations, in
            [1, 4 * hidden]; None: dense. The classifier is always dense (as in the paper).
        dropout: applied to the embeddings and to the LSTM outputs.
    """

    def __init__(
        self,
        vocab: int,
        tags: int,
        *,
        embed: int = 100,
        hidden: int = 500,
        k: int | None = None,
        mode: str = "per_example",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        vocab, tags = check_positive_int(vocab, "vocab"), check_positive_int(tags, "tags")
        embed, hidden = check_positive_int(embed, "embed"), check_positive_int(hidden, "hidden")
        self.embedding = nn.Embedding(vocab, embed, padding_idx=0)
        try:
            self.lstm = MepropLSTM(embed, hidden, k=k, mode=mode)
        except ValueError as error:
            raise ValueError(f"LSTM (4 * hidden = {4 * hidden} gate outputs): {error}") from None
        self.dropout = nn.Dropout(check_dropout(dropout))
        self.classifier = nn.Linear(hidden, tags)

    def forward(self, words: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = self.dropout(self.embedding(words))  # (B, T, embed)
        out, _ = self.lstm(x, lengths)  # (B, T, hidden)
        return self.classifier(self.dropout(out))  # (B, T, tags)
