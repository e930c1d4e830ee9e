"""What feature losses share: layer-pair parameters, shape checks, size matching and the connectors they own.

Features are channel-first: (B, C) vectors, (B, C, L) sequences of 1-D conv nets or (B, C, H, W) maps. Connectors
(1x1 convolutions, small conv stacks) are built by a method's `prepare` from the real shapes, train with the
student and are dropped with the objective after training.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import Tensor, nn
from torch.nn import functional as F

from distil.errors import DistilError


class LayerPairs(BaseModel):
    """Student and teacher taps compared pairwise (one path, or lists of equal length)."""

    model_config = ConfigDict(extra="forbid")
    student: list[str] = Field(..., min_length=1, description="student module path(s), e.g. layer2 (see distil.taps)")
    teacher: list[str] = Field(..., min_length=1, description="teacher module path(s), paired in order")

    @field_validator("student", "teacher", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _same_length(self) -> LayerPairs:
        if len(self.student) != len(self.teacher):
            raise ValueError(f"student lists {len(self.student)} paths but teacher {len(self.teacher)}; pair them")
        return self

    def pairs(self) -> list[tuple[str, str]]:
        """(student tap, teacher tap) pairs."""
        return list(zip(self.student, self.teacher))


class Embeddings(BaseModel):
    """One student and one teacher tap, by default the pooled features the classifiers read."""

    model_config = ConfigDict(extra="forbid")
    student: str = Field("@embedding", description="student tap (default: input of its last Linear layer)")
    teacher: str = Field("@embedding", description="teacher tap (default: input of its last Linear layer)")


def as_map(f: Tensor) -> Tensor:
    """A feature as (B, C, *spatial) with at least one spatial axis: a (B, C) vector becomes (B, C, 1)."""
    return f.unsqueeze(-1) if f.dim() == 2 else f


def spatial_dims(f: Tensor, name: str) -> int:
    """1 or 2: the spatial axes of a feature as a map; anything else is a DistilError naming the loss."""
    dims = as_map(f).dim() - 2
    if dims not in (1, 2):
        raise DistilError(f"distill.losses.{name}: a tapped feature is shaped {tuple(f.shape)}; feature losses read "
                          "(B, C), (B, C, L) or (B, C, H, W) tensors, so tap a layer that gives one.")
    return dims


def check_same_kind(name: str, fs: Tensor, ft: Tensor) -> None:
    """Refuse a student / teacher pair whose features have different numbers of axes."""
    if fs.dim() != ft.dim():
        raise DistilError(f"distill.losses.{name}: the student feature is shaped {tuple(fs.shape[1:])} and the "
                          f"teacher's {tuple(ft.shape[1:])}; pair layers of the same kind (both maps or both vectors).")
    spatial_dims(fs, name)


def conv(dims: int, in_ch: int, out_ch: int, kernel: int = 1, bias: bool = False) -> nn.Module:
    """A Conv1d or Conv2d with 'same' padding."""
    layer = nn.Conv1d if dims == 1 else nn.Conv2d
    return layer(in_ch, out_ch, kernel, padding=kernel // 2, bias=bias)


def batch_norm(dims: int, channels: int) -> nn.Module:
    """BatchNorm1d or BatchNorm2d."""
    return nn.BatchNorm1d(channels) if dims == 1 else nn.BatchNorm2d(channels)


def pool_to(f: Tensor, size: tuple[int, ...]) -> Tensor:
    """Adaptive average pooling of a (B, C, *spatial) map to `size` (no-op when it already has it)."""
    if tuple(f.shape[2:]) == tuple(size):
        return f
    return F.adaptive_avg_pool1d(f, size) if len(size) == 1 else F.adaptive_avg_pool2d(f, size)


def match_sizes(fs: Tensor, ft: Tensor) -> tuple[Tensor, Tensor]:
    """Pool the larger of two maps to the smaller one's spatial size, axis by axis (RepDistiller's rule)."""
    size = tuple(min(a, b) for a, b in zip(fs.shape[2:], ft.shape[2:]))
    return pool_to(fs, size), pool_to(ft, size)


class Connector(nn.Module):
    """1x1 convolution + BatchNorm from the student's channels to the teacher's (FitNets' regressor, AB, OFD)."""

    def __init__(self, dims: int, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = conv(dims, in_ch, out_ch)
        self.bn = batch_norm(dims, out_ch)

    def forward(self, f: Tensor) -> Tensor:
        """(B, in_ch, *S) -> (B, out_ch, *S)."""
        return self.bn(self.conv(f))


def connectors(name: str, pairs: list[tuple[str, str]], student: dict[str, Tensor],
               teacher: dict[str, Tensor]) -> nn.ModuleList:
    """One Connector per tapped pair, from the probe's feature shapes (vectors are treated as length-1 maps)."""
    built = []
    for s, t in pairs:
        fs, ft = student[s], teacher[t]
        check_same_kind(name, fs, ft)
        built.append(Connector(spatial_dims(fs, name), fs.shape[1], ft.shape[1]).to(fs.device))
    return nn.ModuleList(built)
