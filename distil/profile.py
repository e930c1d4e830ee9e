"""How big and how fast a model is: parameters, bytes of its saved weights, latency and throughput."""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Mapping, Sequence

import torch
from torch import nn


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the model's state dict as torch.save writes it."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_once(model: nn.Module, x: torch.Tensor) -> float:  # called inside time_forwards' inference mode
    start = time.perf_counter()
    model(x)
    _sync(x.device)
    return time.perf_counter() - start


@torch.inference_mode()
def time_forwards(runs: Sequence[tuple[nn.Module, torch.Tensor]], repeats: int, warmup: int = 3) -> list[float]:
    """Median seconds of one forward pass of each (model, inputs), timed interleaved: every round times each model
    once, so load that comes and goes on a shared machine falls on all of them alike."""
    for model, x in runs:
        model.eval()
        for _ in range(warmup):
            model(x)
        _sync(x.device)
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for spent, (model, x) in zip(times, runs):
            spent.append(_time_once(model, x))
    return [statistics.median(spent) for spent in times]


def profile_models(models: Mapping[str, nn.Module], input_shape: tuple[int, ...], device: torch.device, *,
                   latency_batch: int = 1, throughput_batch: int = 256,
                   repeats: int = 50) -> dict[str, dict[str, float]]:
    """`profile_model` of several models, their timings interleaved so that their ratios can be trusted."""
    placed = {name: model.to(device) for name, model in models.items()}
    small = torch.randn(latency_batch, *input_shape, device=device)
    large = torch.randn(throughput_batch, *input_shape, device=device)
    latency = time_forwards([(m, small) for m in placed.values()], repeats)
    batch_time = time_forwards([(m, large) for m in placed.values()], max(3, repeats // 5))
    return {name: {"params": count_parameters(m), "bytes": weight_bytes(m), "latency_ms": lat * 1000,
                   "throughput": throughput_batch / bt}
            for (name, m), lat, bt in zip(placed.items(), latency, batch_time)}


def profile_model(model: nn.Module, input_shape: tuple[int, ...], device: torch.device, *, latency_batch: int = 1,
                  throughput_batch: int = 256, repeats: int = 50) -> dict[str, float]:
    """Parameters, bytes, median latency (ms) at `latency_batch` and throughput (samples/s) at `throughput_batch`."""
    return profile_models({"model": model}, input_shape, device, latency_batch=latency_batch,
                          throughput_batch=throughput_batch, repeats=repeats)["model"]
