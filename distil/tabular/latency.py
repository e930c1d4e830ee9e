"""Latency of models on real encoded rows: forward passes timed in interleaved rounds (so load drift hits every model
alike), the median per model."""

from __future__ import annotations

import time

import torch
from torch import Tensor, nn

REPEATS = 30


@torch.inference_mode()
def latencies_ms(models: dict[str, nn.Module], rows: Tensor, batch: int, device: torch.device,
                 repeats: int = REPEATS) -> dict[str, float]:
    """Median milliseconds of one forward pass over `batch` real rows (repeated when the split is smaller)."""
    x = rows.repeat(-(-batch // max(1, len(rows))), 1)[:batch].to(device)
    for model in models.values():
        model.eval()
        model(x)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: float(sorted(t)[len(t) // 2] * 1000) for name, t in times.items()}
