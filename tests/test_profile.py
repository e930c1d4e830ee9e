"""Size and speed profiles: several models are timed interleaved, so load that comes and goes falls on all alike."""

import torch
from torch import nn

from distil.profile import count_parameters, profile_model, profile_models, weight_bytes


class Recorder(nn.Module):
    """A linear model that writes its name into a shared log at every forward pass."""

    def __init__(self, name: str, log: list[str]) -> None:
        super().__init__()
        self.name, self.log, self.linear = name, log, nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.log.append(self.name)
        return self.linear(x)


def test_models_are_timed_in_alternating_rounds_after_their_warm_up() -> None:
    log: list[str] = []
    models = {"a": Recorder("a", log), "b": Recorder("b", log)}
    profiles = profile_models(models, (4,), torch.device("cpu"), repeats=5)
    warmup = 3
    latency_calls = log[2 * warmup:2 * warmup + 2 * 5]
    assert latency_calls == ["a", "b"] * 5
    assert set(profiles) == {"a", "b"}
    for name, model in models.items():
        assert profiles[name]["params"] == count_parameters(model) == 10
        assert profiles[name]["bytes"] == weight_bytes(model)
        assert profiles[name]["latency_ms"] > 0 and profiles[name]["throughput"] > 0


def test_one_model_profile_has_the_same_fields() -> None:
    profile = profile_model(nn.Linear(4, 2), (4,), torch.device("cpu"), repeats=3)
    assert set(profile) == {"params", "bytes", "latency_ms", "throughput"}
