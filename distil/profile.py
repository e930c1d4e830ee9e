"""How big and how fast a model is: parameters, bytes of its saved weights, latency and throughput."""

from __future__ import annotations

import io
import statistics
import time

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


@torch.inference_mode()
def time_forward(model: nn.Module, x: torch.Tensor, repeats: int, warmup: int = 3) -> float:
    """Median seconds of one forward pass of `model` on `x`."""
    model.eval()
    for _ in range(warmup):
        model(x)
    _sync(x.device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        _sync(x.device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def profile_model(model: nn.Module, input_shape: tuple[int, ...], device: torch.device, *, latency_batch: int = 1,
                  throughput_batch: int = 256, repeats: int = 50) -> dict[str, float]:
    """Parameters, bytes, median latency (ms) at `latency_batch` and throughput (samples/s) at `throughput_batch`."""
    model = model.to(device)
    small = torch.randn(latency_batch, *input_shape, device=device)
    large = torch.randn(throughput_batch, *input_shape, device=device)
    latency = time_forward(model, small, repeats)
    batch_time = time_forward(model, large, max(3, repeats // 5))
    return {
        "params": count_parameters(model),
        "bytes": weight_bytes(model),
        "latency_ms": latency * 1000,
        "throughput": throughput_batch / batch_time,
    }
