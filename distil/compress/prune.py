"""Pruning: global magnitude (unstructured, made permanent) and structured channel removal that shrinks layers.

Structured pruning traces the model with torch.fx and finds each Conv/Linear whose output channels flow, through
BatchNorm, activations, pooling, dropout or a flatten, into other Conv/Linear layers only. Those channels can be
removed for real: the producer loses output rows, its BatchNorm loses entries and every consumer loses the matching
input columns. Outputs that reach an add, a concat or the model's output (residual joins, the classifier) are kept.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import GraphModule, Node, symbolic_trace
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn.utils import prune

from distil.errors import DistilError

PRODUCERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Tanh, nn.Sigmoid, nn.Dropout, nn.Identity,
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
)
ELEMENTWISE_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.gelu, F.silu, F.dropout, torch.sigmoid, torch.tanh,
                         F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_avg_pool1d}
ELEMENTWISE_METHODS = {"relu", "sigmoid", "tanh", "contiguous"}


@dataclass
class ChannelGroup:
    """The output channels of one producer layer and every layer that reads them."""

    producer: str
    channels: int
    norms: list[str] = field(default_factory=list)
    consumers: list[tuple[str, int]] = field(default_factory=list)  # (module path, input features per channel)


def prunable_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """The (module, "weight") pairs magnitude pruning ranks: every Linear and Conv weight."""
    return [(m, "weight") for m in model.modules() if isinstance(m, PRODUCERS)]


def prune_magnitude(model: nn.Module, amount: float) -> None:
    """Mask the `amount` fraction of smallest-magnitude Linear/Conv weights, ranked globally (masks stay as hooks)."""
    params = prunable_weights(model)
    if not params:
        raise DistilError("compress.prune: the model has no Linear or Conv layer to prune; remove compress.prune.")
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)


def make_permanent(model: nn.Module) -> None:
    """Fold pruning masks into the weights, so the zeros stay and the state dict is a plain one again."""
    for module, name in prunable_weights(model):
        if prune.is_pruned(module) and hasattr(module, f"{name}_mask"):
            prune.remove(module, name)


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of Linear/Conv weights that are exactly zero."""
    weights = [getattr(m, name) for m, name in prunable_weights(model)]
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / total if total else 0.0


def _trace(model: nn.Module, example: torch.Tensor) -> GraphModule:
    try:
        graph = symbolic_trace(model)
    except Exception as exc:  # torch.fx raises many types on data-dependent control flow
        raise DistilError(f"compress.prune: structured pruning traces the model with torch.fx, which failed "
                          f"({type(exc).__name__}); use compress.prune.method: unstructured.") from None
    was_training = model.training
    model.eval()
    with torch.no_grad():
        ShapeProp(graph).propagate(example)
    model.train(was_training)
    return graph


def _shape(node: Node) -> tuple[int, ...]:
    return tuple(node.meta["tensor_meta"].shape)


def _only_input(node: Node, source: Node) -> bool:
    """Whether `source` is the node's first argument and no other argument is a graph value."""
    args = list(node.args) + list(node.kwargs.values())
    return bool(args) and args[0] is source and not any(isinstance(a, Node) for a in args[1:])


def _flatten_dims(node: Node, modules: dict[str, nn.Module]) -> tuple[int, int] | None:
    """(start_dim, end_dim) when the node flattens its input, else None."""
    if node.op == "call_module" and isinstance(modules[node.target], nn.Flatten):
        return modules[node.target].start_dim, modules[node.target].end_dim
    if (node.op == "call_function" and node.target is torch.flatten) or (
            node.op == "call_method" and node.target == "flatten"):
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return start, end
    return None


def _follow(start: Node, modules: dict[str, nn.Module], calls: Counter) -> ChannelGroup | None:
    """The group fed by `start`'s output channels, or None when any path leads somewhere channels cannot be cut."""
    producer = modules[start.target]
    channels = producer.out_features if isinstance(producer, nn.Linear) else producer.out_channels
    if isinstance(producer, nn.Linear) and len(_shape(start)) != 2:
        return None
    group = ChannelGroup(start.target, channels)
    stack = [(user, start, 1) for user in start.users]
    while stack:
        node, source, per_channel = stack.pop()
        if not _only_input(node, source):
            return None
        module = modules.get(node.target) if node.op == "call_module" else None
        if module is not None and calls[node.target] != 1:
            return None  # a shared module sees other inputs too
        dims = _flatten_dims(node, modules)
        if isinstance(module, PRODUCERS):
            in_features = module.in_features if isinstance(module, nn.Linear) else module.in_channels
            if getattr(module, "groups", 1) != 1 or in_features != channels * per_channel:
                return None
            if not isinstance(module, nn.Linear) and per_channel != 1:
                return None
            group.consumers.append((node.target, per_channel))
            continue
        if isinstance(module, NORMS) and per_channel == 1 and module.num_features == channels:
            group.norms.append(node.target)
        elif dims is not None:
            shape = _shape(source)
            if dims[0] != 1 or dims[1] not in (-1, len(shape) - 1):
                return None
            per_channel *= math.prod(shape[2:])
        elif not (isinstance(module, ELEMENTWISE_MODULES)
                  or (node.op == "call_function" and node.target in ELEMENTWISE_FUNCTIONS)
                  or (node.op == "call_method" and node.target in ELEMENTWISE_METHODS)):
            return None
        stack.extend((user, node, per_channel) for user in node.users)
    return group if group.consumers else None


def channel_groups(model: nn.Module, example: torch.Tensor) -> list[ChannelGroup]:
    """Every layer whose output channels can be removed, with the layers that must shrink with it."""
    graph = _trace(model, example)
    modules = dict(graph.named_modules())
    calls = Counter(n.target for n in graph.graph.nodes if n.op == "call_module")
    groups = []
    for node in graph.graph.nodes:
        if node.op != "call_module" or calls[node.target] != 1:
            continue
        module = modules[node.target]
        if isinstance(module, PRODUCERS) and getattr(module, "groups", 1) == 1:
            group = _follow(node, modules, calls)
            if group is not None:
                groups.append(group)
    return groups


def _cut(module: nn.Module, name: str, index: torch.Tensor, dim: int) -> None:
    tensor = getattr(module, name)
    if tensor is None:
        return
    cut = tensor.detach().index_select(dim, index.to(tensor.device)).clone()
    if isinstance(tensor, nn.Parameter):
        setattr(module, name, nn.Parameter(cut, requires_grad=tensor.requires_grad))
    else:
        setattr(module, name, cut)


def _apply(model: nn.Module, group: ChannelGroup, keep: torch.Tensor) -> None:
    producer = model.get_submodule(group.producer)
    _cut(producer, "weight", keep, 0)
    _cut(producer, "bias", keep, 0)
    if isinstance(producer, nn.Linear):
        producer.out_features = len(keep)
    else:
        producer.out_channels = len(keep)
    for path in group.norms:
        norm = model.get_submodule(path)
        for name in ("weight", "bias", "running_mean", "running_var"):
            _cut(norm, name, keep, 0)
        norm.num_features = len(keep)
    for path, per_channel in group.consumers:
        consumer = model.get_submodule(path)
        columns = (keep[:, None] * per_channel + torch.arange(per_channel)).reshape(-1)
        _cut(consumer, "weight", columns, 1)
        if isinstance(consumer, nn.Linear):
            consumer.in_features = len(columns)
        else:
            consumer.in_channels = len(keep)


def prune_channels(model: nn.Module, example: torch.Tensor, amount: float) -> dict[str, int]:
    """Remove the `amount` fraction of output channels with the smallest L1 norm from every prunable layer, in place.

    Returns the kept width of each pruned layer (what `shrink_to` needs to rebuild the architecture).
    """
    groups = channel_groups(model, example)
    if not groups:
        raise DistilError(f"compress.prune: structured pruning found no layer of {type(model).__name__} whose "
                          "channels can be removed; use compress.prune.method: unstructured.")
    plans = []
    for group in groups:
        weight = model.get_submodule(group.producer).weight.detach()
        norms = weight.abs().reshape(weight.shape[0], -1).sum(1)
        kept = max(1, round(group.channels * (1 - amount)))
        plans.append((group, norms.topk(kept).indices.sort().values.cpu()))
    for group, keep in plans:  # importances are taken before any layer is cut
        _apply(model, group, keep)
    return {group.producer: len(keep) for group, keep in plans}


def shrink_to(model: nn.Module, example: torch.Tensor, widths: dict[str, int]) -> None:
    """Give a freshly built model the layer widths `prune_channels` left, so a pruned state dict loads into it."""
    groups = {g.producer: g for g in channel_groups(model, example)}
    missing = sorted(set(widths) - set(groups))
    if missing:
        raise DistilError(f"pruned model file names layers {missing} that this architecture cannot prune; the file "
                          "does not belong to this model.")
    for path, width in widths.items():
        _apply(model, groups[path], torch.arange(width))
