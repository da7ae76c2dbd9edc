"""Argument checks shared by the functional and module APIs.

Every check raises ``TypeError`` (wrong kind of value) or ``ValueError`` (right
kind, wrong value) with a message that names the argument, the value received
and what is accepted. Nothing is coerced silently.
"""

from __future__ import annotations

import numbers
from typing import Iterable

import torch

__all__ = [
    "check_k",
    "check_k_ratio",
    "check_choice",
    "check_bool",
    "check_linear_operands",
    "check_same_dtype",
    "resolve_k",
    "check_sync_selection",
]


def check_k(k: object, name: str = "k") -> int:
    """Return ``k`` as an int if it is a positive integer (bool is refused)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {k!r} of type {type(k).__name__}")
    if k <= 0:
        raise ValueError(f"{name} must be a positive int (>= 1), got {k!r}")
    return int(k)


def check_k_ratio(k_ratio: object, name: str = "k_ratio") -> float:
    """Return ``k_ratio`` as a float if it is a real number in (0, 1]."""
    if isinstance(k_ratio, bool) or not isinstance(k_ratio, numbers.Real):
        raise TypeError(
            f"{name} must be a float in (0, 1], got {k_ratio!r} of type {type(k_ratio).__name__}"
        )
    if not 0.0 < float(k_ratio) <= 1.0:  # also refuses NaN
        raise ValueError(f"{name} must be in (0, 1], got {k_ratio!r}")
    return float(k_ratio)


def resolve_k(k: object, k_ratio: object, out_features: int) -> int:
    """Turn exactly one of ``k`` / ``k_ratio`` into an int k for a layer with ``out_features`` outputs.

    ``k_ratio`` resolves to ``max(1, round(k_ratio * out_features))`` (Python's
    round: halves go to the even integer). An explicit ``k`` larger than
    ``out_features`` is refused; ``k == out_features`` is the dense gradient.
    """
    if (k is None) == (k_ratio is None):
        raise ValueError(
            f"give exactly one of k or k_ratio, got k={k!r} and k_ratio={k_ratio!r}"
        )
    if k_ratio is not None:
        return max(1, round(check_k_ratio(k_ratio) * out_features))
    k = check_k(k)
    if k > out_features:
        raise ValueError(
            f"k must be at most out_features={out_features} (k == out_features keeps the "
            f"dense gradient), got k={k}"
        )
    return k


def check_bool(value: object, name: str) -> bool:
    """Return ``value`` if it is a bool (1, 0 and None are refused)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


def check_choice(value: object, name: str, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _check_floating(tensor: object, name: str) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor (float16, bfloat16, float32, float64), "
            f"got dtype {tensor.dtype}"
        )


def check_linear_operands(
    input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> None:
    """Check the operands of ``y = input @ weight.T + bias`` (nn.Linear's layout)."""
    _check_floating(input, "input")
    _check_floating(weight, "weight")
    if weight.dim() != 2:
        raise ValueError(
            f"weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}"
        )
    if input.dim() < 1:
        raise ValueError(f"input must have at least 1 dimension (..., in_features), got a 0-d tensor")
    in_features = weight.shape[1]
    if input.shape[-1] != in_features:
        raise ValueError(
            f"input's last dimension must equal in_features={in_features} (weight.shape[1]), "
            f"got input of shape {tuple(input.shape)}"
        )
    if bias is not None:
        _check_floating(bias, "bias")
        if tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(
                f"bias must have shape (out_features,) = ({weight.shape[0]},), "
                f"got shape {tuple(bias.shape)}"
            )


def check_same_dtype(
    input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> None:
    """Refuse mixed dtypes (outside autocast, nn.Linear refuses them too)."""
    if input.dtype != weight.dtype:
        raise TypeError(
            f"input and weight must have the same dtype, got input {input.dtype} and weight "
            f"{weight.dtype}"
        )
    if bias is not None and bias.dtype != weight.dtype:
        raise TypeError(f"bias must have weight's dtype {weight.dtype}, got {bias.dtype}")


def check_positive_int(value: object, name: str) -> int:
    """Return ``value`` as an int if it is an integer >= 1 (bool is refused).

    The generic check for sizes and counts (hidden, batch, layers, threads, ...):
    ``TypeError`` for a value that is not an integer, ``ValueError`` for one below 1.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {value!r} of type {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def check_int_at_least(value: object, name: str, minimum: int) -> int:
    """Return ``value`` as an int if it is an integer >= ``minimum`` (bool is refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{name} must be an int >= {minimum}, got {value!r} of type {type(value).__name__}"
        )
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_real(value: object, name: str, accepted: str) -> float:
    """Return ``value`` as a float if it is a real number (bool is refused), else ``TypeError``.

    ``accepted`` describes the accepted values for the message (``"a float in [0, 1)"``);
    the caller checks the range and raises ``ValueError`` with the same words.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {accepted}, got {value!r} of type {type(value).__name__}")
    return float(value)


def check_threads(threads: object, name: str = "threads") -> int | None:
    """Return ``threads`` if it is None or an int from 1 to this machine's CPU count (``os.cpu_count()``)."""
    import os

    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {threads!r} of type {type(threads).__name__}")
    cpus = os.cpu_count() or 1
    if not 1 <= threads <= cpus:
        raise ValueError(f"{name} must be an int from 1 to {cpus} (os.cpu_count() of this machine), "
                         f"got {threads}")
    return int(threads)


def check_device(device: object, name: str = "device") -> str:
    """Return ``device`` if it is ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (where meprop measures and trains)."""
    import re

    if not isinstance(device, str) or not re.match(r"^(cpu|cuda(:\d+)?)$", device):
        why = (" (the meta device holds shapes but no data: nothing can be trained on it)"
               if isinstance(device, str) and device.startswith("meta") else "")
        raise ValueError(f"{name} must be 'cpu', 'cuda' or 'cuda:N', got {device!r}{why}")
    return device


def check_sync_selection(sync_selection: object, mode: str) -> bool:
    """Return ``sync_selection`` (a bool) if ``mode`` allows it: only unified selection is agreed across ranks."""
    check_bool(sync_selection, "sync_selection")
    if sync_selection and mode != "unified":
        raise ValueError(
            f"sync_selection=True applies to mode='unified' (one column set for the batch); "
            f"got mode={mode!r}, whose selection is per example and needs no synchronization"
        )
    return sync_selection
