"""Modules: MepropLinear (a drop-in for nn.Linear) and convert(model).

The paper applies meProp to every hidden linear layer and leaves the output layer
dense (Section 4); :func:`convert` does exactly that to an existing model.
"""

from __future__ import annotations

import copy
import warnings
from typing import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

from meprop.checks import check_bool, check_choice, check_sync_selection, resolve_k
from meprop._impl.grad_layout import mark_meprop_weight
from meprop._impl.layer_probe import bypassed_linears, linear_call_order
from meprop.error_feedback import ErrorFeedback
from meprop._impl.linear_arguments import check_linear_arguments
from meprop.functional import linear_forward
from meprop.options import BIAS_GRADS
from meprop.selection import MODES, RANDOM_MODES

__all__ = ["MepropLinear", "convert", "sparsified_layers"]


class MepropLinear(nn.Linear):
    """``nn.Linear`` whose backward keeps only k output-gradient entries per example.

    Same parameters (``weight: (out_features, in_features)``, ``bias: (out_features,)``),
    same initialisation and ``state_dict`` keys as ``nn.Linear``, so state dicts load
    both ways. Give exactly one of ``k`` (an int in [1, out_features]) or ``k_ratio``
    (in (0, 1], resolved to ``max(1, round(k_ratio * out_features))``). In ``eval()``
    mode or under ``torch.no_grad()`` it is exactly ``nn.Linear``.

    Training fast: use a lazy :mod:`meprop.optim` optimizer
    (``meprop.optim.Adam(model.parameters(), lazy=True)``). It asks this layer for a
    row-sparse weight gradient and updates only the touched rows, so neither the
    gradient nor the update costs O(out_features * in_features). With any other
    optimizer the weight gradient is dense (zero outside the touched rows).

    ``sparse_grad=True`` forces a row-sparse (COO) weight gradient, at every k (also
    ``k = out_features``), for other consumers (SGD and Adagrad without weight decay,
    SparseAdam, or a dense ``.grad`` kept allocated, into which autograd adds the touched
    rows in place).

    Twice differentiable (``create_graph=True``, gradient penalties) on every path, and
    usable under ``torch.func`` (grad, vmap, functional_call): see
    :func:`meprop.meprop_linear`.
    ``sparse_grad=True`` forces a row-sparse (COO) weight gradient for other consumers
    (SGD and Adagrad without weight decay, SparseAdam, or a dense ``.grad`` kept
    allocated, into which autograd adds the touched rows in place).

    ``sync_selection=True`` (with ``mode="unified"``): under DistributedDataParallel the
    ranks agree on one column set per backward (column sums all-reduced before the top-k),
    so training equals one process on the ranks' concatenated batch
    (:func:`meprop.meprop_linear`; see :mod:`meprop.distributed`).

    ``generator``: the random source of ``mode="random"`` and the sampled modes (None:
    torch's global generator). ``error_feedback``: a decay in (0, 1] turns on the dropped-
    gradient memory (:mod:`meprop.error_feedback`), held as the ``error_feedback`` submodule
    (its ``memory`` buffer is in the state dict); None: off.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        k: int | None = None,
        k_ratio: float | None = None,
        mode: str = "per_example",
        bias_grad: str = "sparse",
        sparse_grad: bool = False,
        sync_selection: bool = False,
        generator: torch.Generator | None = None,
        error_feedback: float | None = None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._configure(k, k_ratio, mode, bias_grad, sparse_grad, sync_selection, generator, error_feedback)
        mark_meprop_weight(self.weight)

    def _configure(self, k, k_ratio, mode, bias_grad, sparse_grad, sync_selection=False,
                   generator=None, error_feedback=None) -> None:
        self.k = resolve_k(k, k_ratio, self.out_features)
        self.k_ratio = k_ratio
        self.mode = check_choice(mode, "mode", MODES)
        self.bias_grad = check_choice(bias_grad, "bias_grad", BIAS_GRADS)
        self.sparse_grad = check_bool(sparse_grad, "sparse_grad")
        self.sync_selection = check_sync_selection(sync_selection, self.mode)
        if generator is not None and (not isinstance(generator, torch.Generator) or self.mode not in RANDOM_MODES):
            raise ValueError(f"generator must be a torch.Generator used by the modes {RANDOM_MODES}, got "
                             f"{type(generator).__name__} with mode={self.mode!r}")
        self.generator = generator
        self.error_feedback = None if error_feedback is None else ErrorFeedback(
            self.out_features, error_feedback, device=self.weight.device, dtype=self.weight.dtype)

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        *,
        k: int | None = None,
        k_ratio: float | None = None,
        mode: str = "per_example",
        bias_grad: str = "sparse",
        sparse_grad: bool = False,
        sync_selection: bool = False,
        generator: torch.Generator | None = None,
        error_feedback: float | None = None,
    ) -> "MepropLinear":
        """A MepropLinear that shares ``linear``'s weight and bias (the same Parameter objects)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        module = cls.__new__(cls)
        nn.Module.__init__(module)
        module.in_features, module.out_features = linear.in_features, linear.out_features
        module.weight = linear.weight
        module.bias = linear.bias  # a Parameter, or None (registered as such)
        module._configure(k, k_ratio, mode, bias_grad, sparse_grad, sync_selection, generator, error_feedback)
        mark_meprop_weight(module.weight)
        module.train(linear.training)
        return module

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or not torch.is_grad_enabled():
            return F.linear(input, self.weight, self.bias)
        weight = self.weight
        mark_meprop_weight(weight)  # again: a deepcopy or a new Parameter drops the mark
        mode, state = self.mode, self.__dict__
        arguments = (self.k, mode, self.bias_grad, self.sparse_grad,
                     state.get("generator") if mode in RANDOM_MODES else None,
                     state.get("sync_selection", False), getattr(self, "error_feedback", None))
        # Checked when they change (they are attributes a user or a schedule may set), not per call.
        if torch.compiler.is_compiling() or arguments != state.get("_checked_arguments"):
            arguments = (check_linear_arguments(*arguments), *arguments[1:])
            if not torch.compiler.is_compiling():
                state["_checked_arguments"] = arguments
        return linear_forward(input, weight, self.bias, *arguments)

    def extra_repr(self) -> str:
        ratio = "" if self.k_ratio is None else f", k_ratio={self.k_ratio}"
        sparse = ", sparse_grad=True" if self.sparse_grad else ""
        sparse += ", sync_selection=True" if getattr(self, "sync_selection", False) else ""
        return (
            f"{super().extra_repr()}, k={self.k}{ratio}, mode={self.mode}, "
            f"bias_grad={self.bias_grad}{sparse}"
        )


SkipSpec = Iterable[str] | Callable[[str, nn.Module], bool] | None
KSpec = int | dict | Callable[[str, nn.Module], "int | None"] | None


def convert(
    model: nn.Module,
    *,
    k: KSpec = None,
    k_ratio: float | None = None,
    mode: str = "per_example",
    bias_grad: str = "sparse",
    sparse_grad: bool = False,
    sync_selection: bool = False,
    generator: torch.Generator | None = None,
    error_feedback: float | None = None,
    skip: SkipSpec = None,
    keep_output_layer: bool = True,
    example_inputs=None,
    inplace: bool = False,
) -> nn.Module:
    """Replace the ``nn.Linear`` layers of ``model`` by :class:`MepropLinear` sharing their parameters.

    Args:
        model: any module; ``model`` itself may be an ``nn.Linear``.
        k, k_ratio: exactly one; ``k`` must not exceed any converted layer's out_features.
            Per-layer k: ``k`` a dict ``{name: k or None}`` (the layers it names are converted
            with their k, None or unnamed ones stay dense; a name that is no linear layer of
            the model, or the kept-dense output layer, is an error) or a callable
            ``(name, module) -> k or None`` asked for each layer that would be converted
            (None: leave it dense).
        mode, bias_grad, sparse_grad, sync_selection, generator, error_feedback: passed to
            every :class:`MepropLinear` (``generator`` is shared: one random stream;
            ``error_feedback``: each layer gets its own memory with this decay).
        skip: qualified module names (as in ``model.named_modules()``) or a predicate
            ``(name, module) -> bool`` naming linear layers to leave dense.
        keep_output_layer: leave the output layer dense (the paper's setting). Without
            ``example_inputs`` the output layer is the **last nn.Linear in registration
            order** (``model.named_modules()``): check that this is your model's head, or
            name the head in ``skip`` and pass ``keep_output_layer=False``. Set False to
            convert it too.
        example_inputs: the inputs of one forward: a tensor (``model(x)``), a tuple
            (``model(*args)``) or a dict (``model(**kwargs)``). When given, the model runs
            once on them (no_grad, buffers and the random number generators restored) to
            find the linear layers it really calls: the output layer is then the last one
            *called*, and layers never called are left dense (with a warning).
        inplace: modify ``model`` itself. Otherwise the module tree is copied and the
            copy shares its parameter and buffer tensors with ``model`` (training one
            trains the other; ``copy.deepcopy`` the model first for independent weights).

    Returns:
        The converted model. Layers that already are MepropLinear are left as they are. A
        linear module registered under several names (shared) becomes one MepropLinear
        registered under all of them, or stays dense under all of them. Left dense, with
        a warning naming them: linear layers inside ``nn.MultiheadAttention`` (it uses their
        weights directly and never calls their forward; build attention from ``nn.Linear``
        projections to sparsify it) and ``nn.Linear`` subclasses that override ``forward``
        (their computation is theirs, not ``F.linear``). Refused with a ``ValueError``
        naming the layer: an uninitialised ``nn.LazyLinear`` (run one forward first), a
        parametrized weight (``torch.nn.utils.parametrize``, ``parametrizations.weight_norm``)
        and a layer with module hooks (``torch.nn.utils.prune``, the old ``weight_norm``, yours):
        a MepropLinear would drop them; remove them or ``skip`` the layer.
        :func:`sparsified_layers` lists what was converted. Fastest CPU step: ``meprop.optim.Adam(lazy=True)``
        (h=4096: 37 vs 132 ms for dense's fastest, fused Adam; level at h=500; README, ``--profile optimizers``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    linears, layer_k = _layers_to_convert(model, k, skip, keep_output_layer, example_inputs)
    for names, module in linears:
        _refuse_unconvertible(names[0], module)
    if not inplace:
        model = _copy_sharing_tensors(model)
    converted = {}
    for names, module in linears:
        module = model.get_submodule(names[0]) if names[0] else model
        try:
            replacement = MepropLinear.from_linear(
                module, k=layer_k[names[0]], k_ratio=k_ratio, mode=mode,
                bias_grad=bias_grad, sparse_grad=sparse_grad, sync_selection=sync_selection,
                generator=generator, error_feedback=error_feedback,
            )
        except (ValueError, TypeError) as error:
            raise type(error)(f"cannot convert layer {names[0] or '<model>'!r}: {error}") from None
        converted.update({name: replacement for name in names})
    return _replaced(model, converted)


def _layers_to_convert(model, k, skip, keep_output_layer, example_inputs):
    """The ``(names, module)`` pairs convert() converts, and each one's k (by first name)."""
    should_skip = _skip_predicate(skip, model)
    linears = _linear_modules(model)
    skipped = {names[0] for names, module in linears if any(should_skip(name, module) for name in names)}
    _refuse_uninitialised([(names, module) for names, module in linears if names[0] not in skipped])
    call_order = None if example_inputs is None else linear_call_order(model, example_inputs)
    left_dense = _left_dense_with_reasons(model, linears, call_order)
    linears = [(names, module) for names, module in linears if names[0] not in left_dense]
    if keep_output_layer and linears:
        output = _output_layer_name([(names[0], module) for names, module in linears], call_order)
        linears = [(names, module) for names, module in linears if names[0] != output]
    linears = [(names, module) for names, module in linears if names[0] not in skipped]
    k_of = _per_layer_k(k, model, [names for names, _ in linears])
    layer_k = {names[0]: k_of(names, module) for names, module in linears}  # asked once per layer
    linears = [(names, module) for names, module in linears if layer_k[names[0]] is not None or k is None]
    return linears, layer_k


def _per_layer_k(k: KSpec, model: nn.Module, candidates: list[list[str]]):
    """``k_of(names, module) -> k or None`` for the layers convert() would convert (by all their names)."""
    if isinstance(k, dict):
        linear_names = {name for names, _ in _linear_modules(model) for name in names}
        unknown = sorted(str(name) for name in k if name not in linear_names)
        if unknown:
            raise ValueError(f"k names layers that are not nn.Linear layers of the model: {unknown} "
                             f"(its linear layers: {sorted(linear_names)})")
        convertible = {name for names in candidates for name in names}
        dense = sorted(name for name, value in k.items() if value is not None and name not in convertible)
        if dense:
            raise ValueError(f"k gives a k to layers that convert() leaves dense (the output layer with "
                             f"keep_output_layer=True, skip, or meProp cannot apply): {dense}")
        return lambda names, module: next((k[name] for name in names if name in k), None)
    if callable(k):
        return lambda names, module: k(names[0], module)
    return lambda names, module: k


def _replaced(model: nn.Module, converted: dict[str, nn.Module]) -> nn.Module:
    """``model`` with the modules at the names of ``converted`` replaced."""
    if "" in converted:  # the model is itself a Linear
        return converted[""]
    for name, replacement in converted.items():
        parent_name, _, child_name = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child_name, replacement)
    return model


def sparsified_layers(model: nn.Module) -> list[str]:
    """Qualified names of the modules of ``model`` whose backward is meProp's (every name of a shared one)."""
    return [
        name for name, module in model.named_modules(remove_duplicate=False)
        if isinstance(module, MepropLinear)
    ]


def _linear_modules(model: nn.Module) -> list[tuple[list[str], nn.Linear]]:
    """Each nn.Linear (not yet MepropLinear) of ``model`` once, with every name it is registered under."""
    found: dict[int, tuple[list[str], nn.Linear]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, nn.Linear) and not isinstance(module, MepropLinear):
            found.setdefault(id(module), ([], module))[0].append(name)
    return list(found.values())


def _refuse_uninitialised(linears) -> None:
    for names, module in linears:
        if isinstance(module.weight, nn.parameter.UninitializedParameter):
            raise ValueError(
                f"cannot convert layer {names[0] or '<model>'!r}: it is an uninitialised "
                f"{type(module).__name__} (in_features unknown until its first forward); run one "
                f"forward of the model on an example batch before convert(), or skip the layer"
            )


def _refuse_unconvertible(name: str, module: nn.Linear) -> None:
    """A layer whose weight or forward a MepropLinear would not reproduce exactly."""
    reason = None
    if parametrize.is_parametrized(module):
        reason = (
            f"its parameters are parametrized ({', '.join(module.parametrizations.keys())}: "
            f"torch.nn.utils.parametrize / parametrizations.weight_norm)"
        )
    elif not isinstance(module.weight, nn.Parameter):
        reason = "its weight is not a Parameter but computed before each forward (torch.nn.utils.prune?)"
    elif hooks := [*module._forward_pre_hooks.values(), *module._forward_hooks.values(),
                   *module._backward_pre_hooks.values(), *module._backward_hooks.values()]:
        names = ", ".join(getattr(h, "__name__", type(h).__name__) for h in hooks)
        reason = f"it has module hooks ({names}: torch.nn.utils.prune, weight_norm or your own)"
    if reason:
        raise ValueError(
            f"cannot convert layer {name or '<model>'!r}: {reason}, which a MepropLinear would "
            f"drop; remove them first (parametrize.remove_parametrizations, prune.remove, "
            f"remove_weight_norm) or leave the layer dense with skip=[{name!r}]"
        )


def _left_dense_with_reasons(model, linears, call_order) -> dict[str, str]:
    """Linear layers convert() must leave dense (by first name), each with its reason (warned about)."""
    bypassed = bypassed_linears(model)
    called = None if call_order is None else set(call_order)
    reasons = {}
    for names, module in linears:
        if bypassed & set(names):
            reasons[names[0]] = "nn.MultiheadAttention uses its weight directly, never its forward"
        elif type(module).forward is not nn.Linear.forward:
            reasons[names[0]] = f"{type(module).__name__} overrides forward"
        elif called is not None and names[0] not in called:
            reasons[names[0]] = "not called by the forward on example_inputs"
    if reasons:
        listed = "; ".join(f"{name!r} ({why})" for name, why in sorted(reasons.items()))
        warnings.warn(
            f"convert(): {len(reasons)} linear layer(s) left dense because meProp cannot "
            f"apply there: {listed}",
            UserWarning,
            stacklevel=3,
        )
    return reasons


def _output_layer_name(linears, call_order) -> str:
    """The layer keep_output_layer keeps dense: last called, else last registered."""
    names = {name for name, _ in linears}
    called = [name for name in call_order or () if name in names]
    return called[-1] if called else linears[-1][0]


def _skip_predicate(skip: SkipSpec, model: nn.Module) -> Callable[[str, nn.Module], bool]:
    if skip is None:
        return lambda name, module: False
    if callable(skip):
        return skip
    if isinstance(skip, str):
        raise TypeError(
            f"skip must be an iterable of module names or a predicate, got the string {skip!r} "
            f"(wrap a single name in a list)"
        )
    names = set(skip)
    unknown = names - {name for name, _ in model.named_modules(remove_duplicate=False)}
    if unknown:
        raise ValueError(f"skip names modules that the model does not have: {sorted(unknown)}")
    return lambda name, module: name in names


def _copy_sharing_tensors(model: nn.Module) -> nn.Module:
    """Deep-copy the module tree but keep the same Parameter, buffer and tensor-attribute objects
    (a pruned layer's weight is a computed tensor attribute, which deepcopy would refuse)."""
    memo = {id(t): t for t in model.parameters()}
    memo.update({id(t): t for t in model.buffers()})
    for module in model.modules():
        memo.update({id(v): v for v in vars(module).values() if isinstance(v, torch.Tensor)})
    return copy.deepcopy(model, memo)
