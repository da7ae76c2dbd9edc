"""The keyword arguments of a meProp linear layer, checked: errors name the argument and what is accepted."""

from __future__ import annotations

import torch

from meprop.checks import check_bool, check_choice, check_k, check_sync_selection
from meprop.error_feedback import ErrorFeedback
from meprop.options import BIAS_GRADS
from meprop.selection import MODES, RANDOM_MODES, SAMPLED_MODES

__all__ = ["check_linear_arguments"]


def check_linear_arguments(k, mode, bias_grad, sparse_grad, generator, sync_selection, error_feedback) -> int:
    """meprop_linear's keyword arguments checked (errors name the argument); returns k."""
    k = check_k(k)
    check_choice(mode, "mode", MODES)
    check_choice(bias_grad, "bias_grad", BIAS_GRADS)
    check_bool(sparse_grad, "sparse_grad")
    check_sync_selection(sync_selection, mode)
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator must be a torch.Generator or None, got {type(generator).__name__}"
            )
        if mode not in RANDOM_MODES:
            raise ValueError(
                f"generator is used only by mode='random' and the sampled modes {SAMPLED_MODES} "
                f"(per_example and unified selection are deterministic), got generator with mode={mode!r}"
            )
    if error_feedback is not None and not isinstance(error_feedback, ErrorFeedback):
        raise TypeError(f"error_feedback must be a meprop.error_feedback.ErrorFeedback or None, "
                        f"got {type(error_feedback).__name__}")
    return k
