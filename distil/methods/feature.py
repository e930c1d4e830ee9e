"""Feature ("process") losses on tapped intermediate features: FitNets, AT, NST, FSP, AB, VID, FT, OFD, ReviewKD.

Each term names its layers by module path (`student: layer2`, `teacher: layer3`; lists pair several layers) and
builds what it owns (connectors, regressors, paraphraser, fusion modules) in `prepare`, from the real shapes.
Where the spatial sizes differ, the larger map is average-pooled to the smaller, as RepDistiller does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from distil.errors import DistilError
from distil.methods.base import Method, Outputs, Pretraining, register
from distil.methods.connectors import (
    LayerPairs,
    as_map,
    batch_norm,
    check_same_kind,
    connectors,
    conv,
    match_sizes,
    pool_to,
    spatial_dims,
)
from distil.methods.logits import Progressive


class PairMethod(Method):
    """A loss over (student tap, teacher tap) pairs of feature maps; weight auto unless a recipe gives one."""

    Params = LayerPairs
    default_weight = "auto"

    def student_taps(self) -> list[str]:
        """The student paths of every pair."""
        return list(self.params.student)

    def teacher_taps(self) -> list[str]:
        """The teacher paths of every pair."""
        return list(self.params.teacher)

    def maps(self, student: Outputs, teacher: Outputs) -> list[tuple[Tensor, Tensor]]:
        """Each pair's features as float (B, C, *spatial) maps."""
        return [(as_map(student.features[s]).float(), as_map(teacher.features[t]).float())
                for s, t in self.params.pairs()]

    def require_maps(self, student: Outputs, teacher: Outputs) -> None:
        """Refuse vector features for a loss defined over spatial positions."""
        for s, t in self.params.pairs():
            fs, ft = student.features[s], teacher.features[t]
            check_same_kind(self.name, fs, ft)
            if fs.dim() < 3:
                raise DistilError(f"distill.losses.{self.name}: '{s}' gives vectors {tuple(fs.shape[1:])}, but "
                                  f"{self.name} compares spatial maps; tap convolutional layers (B, C, L) or "
                                  "(B, C, H, W).")


@register("fitnet")
class FitNet(PairMethod):
    """Hints: MSE between the teacher's feature map and the student's, mapped by a 1x1 conv + BN regressor."""

    paper = "Romero, Ballas, Kahou, Chassang, Gatta, Bengio. FitNets: Hints for Thin Deep Nets. ICLR 2015"

    def prepare(self, student: Outputs, teacher: Outputs | None, num_samples: int) -> None:
        """One regressor per pair, from the student's channels to the teacher's."""
        self.regressors = connectors(self.name, self.params.pairs(), student.features, teacher.features)

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        total = torch.zeros((), device=student.logits.device)
        for regressor, (fs, ft) in zip(self.regressors, self.maps(student, teacher)):
            fs, ft = match_sizes(regressor(fs), ft)
            total = total + F.mse_loss(fs, ft)
        return total


class ATParams(LayerPairs):
    """Attention transfer's exponent."""

    p: float = Field(2.0, gt=0, description="attention map = mean over channels of |f|^p (paper: 2)")


def attention(f: Tensor, p: float) -> Tensor:
    """AT's spatial attention map of a (B, C, *S) feature: mean_c |f|^p, flattened and L2-normalized."""
    return F.normalize(f.abs().pow(p).mean(1).flatten(1), dim=1)


@register("at")
class AT(PairMethod):
    """Attention transfer: match the L2-normalized spatial attention maps (channel mean of |f|^p); any widths.

    The squared distance between the two unit-norm maps, averaged over the batch: bounded by 4 whatever the map
    size (RepDistiller's mean over positions shrinks it with the number of positions, hence its weight of 1000)."""

    paper = "Zagoruyko, Komodakis. Paying More Attention to Attention. ICLR 2017"
    Params = ATParams

    def prepare(self, student: Outputs, teacher: Outputs | None, num_samples: int) -> None:
        """Check the taps give spatial maps."""
        self.require_maps(student, teacher)

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        total = torch.zeros((), device=student.logits.device)
        for fs, ft in self.maps(student, teacher):
            fs, ft = match_sizes(fs, ft)
            total = total + (attention(fs, self.params.p) - attention(ft, self.params.p)).pow(2).sum(1).mean()
        return total


def poly_mmd(fs: Tensor, ft: Tensor) -> Tensor:
    """Squared MMD with the kernel (x.y)^2 between the channels of two maps, each channel L2-normalized over space."""
    s = F.normalize(fs.flatten(2), dim=2)
    t = F.normalize(ft.flatten(2), dim=2)

    def kernel(a: Tensor, b: Tensor) -> Tensor:
        return (a @ b.transpose(1, 2)).pow(2).mean()

    return kernel(t, t) + kernel(s, s) - 2 * kernel(s, t)


@register("nst")
class NST(PairMethod):
    """Neuron selectivity transfer: MMD (polynomial kernel) between the distributions of channel activation maps."""

    paper = "Huang, Wang. Like What You Like: Knowledge Distill via Neuron Selectivity Transfer. 2017"

    def prepare(self, student: Outputs, teacher: Outputs | None, num_samples: int) -> None:
        """Check the taps give spatial maps."""
        self.require_maps(student, teacher)

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        total = torch.zeros((), device=student.logits.device)
        for fs, ft in self.maps(student, teacher):
            total = total + poly_mmd(*match_sizes(fs, ft))
        return total


class FSPParams(LayerPairs):
    """FSP reads consecutive layers: (0, 1), (1, 2), ... of each list."""

    student: list[str] = Field(..., min_length=2, description="student module paths in forward order (at least 2)")
    teacher: list[str] = Field(..., min_length=2, description="teacher module paths, as many, in forward order")


def fsp_matrix(a: Tensor, b: Tensor) -> Tensor:
    """The flow of solution procedure between two maps: (B, Ca, Cb) inner products over space / positions."""
    a = pool_to(a, tuple(b.shape[2:])) if a.shape[2:] != b.shape[2:] else a
    return a.flatten(2) @ b.flatten(2).transpose(1, 2) / a.flatten(2).shape[-1]


@register("fsp")
class FSP(Method):
    """Flow of solution procedure: MSE between the Gram matrices of consecutive layer pairs (widths must match)."""

    paper = "Yim, Joo, Bae, Kim. A Gift from Knowledge Distillation: Fast Optimization, Network Minimization and "\
            "Transfer Learning. CVPR 2017"
    Params = FSPParams
    default_weight = "auto"

    def student_taps(self) -> list[str]:
        """The student's layers."""
        return list(self.params.student)

    def teacher_taps(self) -> list[str]:
        """The teacher's layers."""
        return list(self.params.teacher)

    def matrices(self, out: Outputs, taps: list[str]) -> list[Tensor]:
        """The FSP matrix of each consecutive pair of taps."""
        maps = [as_map(out.features[t]).float() for t in taps]
        return [fsp_matrix(a, b) for a, b in zip(maps, maps[1:])]

    def prepare(self, student: Outputs, teacher: Outputs | None, num_samples: int) -> None:
        """Check that each student matrix has the teacher's shape (C_i x C_i+1)."""
        s_shapes = [tuple(g.shape[1:]) for g in self.matrices(student, self.params.student)]
        t_shapes = [tuple(g.shape[1:]) for g in self.matrices(teacher, self.params.teacher)]
        if s_shapes != t_shapes:
            raise DistilError(f"distill.losses.fsp: the student's layer pairs give {s_shapes} matrices and the "
                              f"teacher's {t_shapes}; pair layers with the same channel widths.")

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        pairs = zip(self.matrices(student, self.params.student), self.matrices(teacher, self.params.teacher))
        return sum((F.mse_loss(gs, gt) for gs, gt in pairs), torch.zeros((), device=student.logits.device))


class ABParams(LayerPairs):
    """AB's margin and its initialisation stage."""

    student: list[str] = Field(..., min_length=1, description="student pre-ReLU taps, e.g. layer3.0.relu2:input")
    teacher: list[str] = Field(..., min_length=1, description="teacher pre-ReLU taps, paired in order")
    margin: float = Field(1.0, gt=0, description="margin around the activation boundary")
    init_epochs: int = Field(4, ge=0, description="epochs of the initialisation stage that trains the student with "
                             "this loss alone before distillation (RepDistiller: 30 of 240)")


@register("ab")
class AB(PairMethod):
    """Activation boundaries: a margin loss so the student's neurons switch on and off where the teacher's do.

    Reads pre-ReLU features through a 1x1 conv + BN connector; trains the student with this loss alone for
    init_epochs first (its own stage), then acts as an ordinary term (weight 0 keeps it to the initialisation)."""

    paper = "Heo, Lee, Yun, Choi. Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden " \
            "Neurons. AAAI 2019"
    Params = ABParams

    def prepare(self, student: Outputs, teacher: Outputs | None, num_samples: int) -> None:
        """One 1x1 conv + BN connector per pair."""
        self.connectors = connectors(self.name, self.params.pairs(), student.features, teacher.features)

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        m, n = self.params.margin, len(self.connectors)
        total = torch.zeros((), device=student.logits.device)
        for i, (connector, (fs, ft)) in enumerate(zip(self.connectors, self.maps(student, teacher))):
            s, t = match_sizes(connector(fs), ft)
            loss = ((s + m).pow(2) * ((s > -m) & (t <= 0)) + (s - m).pow(2) * ((s <= m) & (t > 0))).sum()
            total = total + 2.0 ** (i - n + 1) * loss / (s.shape[0] * 1000)
        return total

    def pretraining(self, student: nn.Module) -> Pretraining | None:
        """The initialisation: the student and connectors minimise this loss alone."""
        params = list(student.parameters()) + list(self.connectors.parameters())
        return Pretraining(self.params.init_epochs, params, self)


class VIDParams(LayerPairs):
    """VID's initial variance."""

    init_var: float = Field(5.0, gt=0, description="initial variance of the Gaussian per teacher channel")


class VIDRegressor(nn.Module):
    """Mean of the teacher feature given the student's (three 1x1 convs) and a learned variance per channel."""

    def __init__(self, dims: int, in_ch: int, out_ch: int, init_var: float, eps: float = 1e-5) -> None:
        super().__init__()
        self.mean = nn.Sequential(conv(dims, in_ch, out_ch), nn.ReLU(), conv(dims, out_ch, out_ch), nn.ReLU(),
                                  conv(dims, out_ch, out_ch))
        self.log_scale = nn.Parameter(torch.full((out_ch,), math.log(math.expm1(init_var - eps))))
        self.eps = eps

    def variance(self) -> Tensor:
        """softplus(log_scale) + eps, per channel."""
        return F.softplus(self.log_scale) + self.eps


@register("vid")
class VID(PairMethod):
    """Variational information distillation: Gaussian likelihood of the teacher's features given the student's.

    A regressor predicts the mean from the student's feature, with a learned variance per teacher channel."""

    paper = "Ahn, Hu, Damianou, Lawrence, Dai. Variational Information Distillation for Knowledge Transfer. CVPR 2019"
    Params = VIDParams

    def prepare(self, student: Outputs, teacher: Outputs | None, num_samples: int) -> None:
        """One regressor (and variance) per pair."""
        regressors = []
        for s, t in self.params.pairs():
            fs, ft = student.features[s], teacher.features[t]
            check_same_kind(self.name, fs, ft)
            regressors.append(VIDRegressor(spatial_dims(fs, self.name), fs.shape[1], ft.shape[1],
                                           self.params.init_var).to(fs.device))
        self.regressors = nn.ModuleList(regressors)

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        total = torch.zeros((), device=student.logits.device)
        for regressor, (fs, ft) in zip(self.regressors, self.maps(student, teacher)):
            fs, ft = match_sizes(fs, ft)
            var = regressor.variance().reshape(1, -1, *([1] * (ft.dim() - 2)))
            total = total + (0.5 * ((regressor.mean(fs) - ft).pow(2) / var + var.log())).mean()
        return total


class FTParams(LayerPairs):
    """FT's factor size and the paraphraser's pre-training."""

    student: list[str] = Field(..., min_length=1, max_length=1, description="the student tap the translator reads")
    teacher: list[str] = Field(..., min_length=1, max_length=1, description="the teacher tap the paraphraser reads")
    rate: float = Field(0.5, gt=0, description="factor channels = rate x teacher channels (paper: 0.5)")
    init_epochs: int = Field(4, ge=0, description="epochs pre-training the paraphraser (an autoencoder of the "
                             "teacher's feature) before distillation (RepDistiller: 30)")


def conv_stack(dims: int, channels: list[int]) -> nn.Sequential:
    """3x3 convolutions between consecutive channel counts, each followed by LeakyReLU(0.1)."""
    layers: list[nn.Module] = []
    for a, b in zip(channels, channels[1:]):
        layers += [conv(dims, a, b, kernel=3, bias=True), nn.LeakyReLU(0.1)]
    return nn.Sequential(*layers)


def factor(f: Tensor) -> Tensor:
    """A factor flattened per sample and L2-normalized."""
    return F.normalize(f.flatten(1), dim=1)


@register("ft")
class FT(PairMethod):
    """Factor transfer: L1 distance between normalized teacher factors (paraphraser) and student factors.

    The paraphraser, an autoencoder of the teacher's feature, is pre-trained for init_epochs (its own stage) and
    then frozen; the translator on the student's feature trains with the student."""

    paper = "Kim, Park, Kwak. Paraphrasing Complex Network: Network Compression via Factor Transfer. NeurIPS 2018"
    Params = FTParams

    def prepare(self, student: Outputs, teacher: Outputs | None, num_samples: int) -> None:
        """The translator (student side, trains with it) and the paraphraser (frozen after its pre-training)."""
        (s, t), = self.params.pairs()
        fs, ft = student.features[s], teacher.features[t]
        check_same_kind(self.name, fs, ft)
        dims, cs, ct = spatial_dims(fs, self.name), fs.shape[1], ft.shape[1]
        k = max(1, round(ct * self.params.rate))
        self.translator = conv_stack(dims, [cs, cs, k]).to(fs.device)
        self.encoder = conv_stack(dims, [ct, ct, k]).to(fs.device)
        self.decoder = nn.Sequential(conv_stack(dims, [k, ct]), conv(dims, ct, ct, kernel=3, bias=True)).to(fs.device)
        for p in [*self.encoder.parameters(), *self.decoder.parameters()]:
            p.requires_grad_(False)

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        (fs, ft), = self.maps(student, teacher)
        with torch.no_grad():
            factor_t = self.encoder(ft)
        factor_s, factor_t = match_sizes(self.translator(fs), factor_t)
        return (factor(factor_s) - factor(factor_t)).abs().sum(1).mean()

    def reconstruction(self, student: Outputs | None, teacher: Outputs, target: Tensor) -> Tensor:
        """The paraphraser's pre-training loss: MSE between the teacher's feature and its reconstruction."""
        ft = as_map(teacher.features[self.params.teacher[0]]).float()
        return F.mse_loss(self.decoder(self.encoder(ft)), ft)

    def pretraining(self, student: nn.Module) -> Pretraining | None:
        """Pre-train the paraphraser on the teacher's features (the student is not run)."""
        params = [*self.encoder.parameters(), *self.decoder.parameters()]
        return Pretraining(self.params.init_epochs, params, self.reconstruction, needs_student=False)


@register("ofd")
class OFD(PairMethod):
    """Overhaul of feature distillation: partial L2 to margin-clipped pre-ReLU teacher features.

    The student's feature goes through a 1x1 conv + BN connector; positions where the teacher is negative and the
    student is below it do not count, since the teacher's ReLU would discard them."""

    paper = "Heo, Kim, Yun, Park, Kwak, Choi. A Comprehensive Overhaul of Feature Distillation. ICCV 2019"

    def prepare(self, student: Outputs, teacher: Outputs | None, num_samples: int) -> None:
        """Connectors, and each teacher channel's margin: the mean of its negative responses on the probe batch
        (the paper derives it from the teacher's BatchNorm; this needs no knowledge of the teacher's layers)."""
        self.connectors = connectors(self.name, self.params.pairs(), student.features, teacher.features)
        for i, t in enumerate(self.params.teacher):
            ft = as_map(teacher.features[t]).float()
            negative = ft.clamp(max=0).transpose(0, 1).flatten(1)
            count = (ft < 0).transpose(0, 1).flatten(1).sum(1).clamp_min(1)
            self.register_buffer(f"margin{i}", (negative.sum(1) / count).reshape(1, -1, *([1] * (ft.dim() - 2))))

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        n = len(self.connectors)
        total = torch.zeros((), device=student.logits.device)
        for i, (connector, (fs, ft)) in enumerate(zip(self.connectors, self.maps(student, teacher))):
            s, t = match_sizes(connector(fs), torch.maximum(ft, getattr(self, f"margin{i}")))
            loss = ((s - t).pow(2) * ((s > t) | (t > 0))).sum()
            total = total + loss / (2 ** (n - i - 1) * s.shape[0] * 1000)
        return total


class ReviewParams(LayerPairs):
    """ReviewKD's fusion width and warm-up."""

    student: list[str] = Field(..., min_length=1, description="student taps from shallow to deep, e.g. "
                               "[layer1, layer2, layer3]")
    teacher: list[str] = Field(..., min_length=1, description="teacher taps, as many, from shallow to deep")
    mid_channels: int = Field(64, ge=1, description="width of the attention-based fusion (ABF) modules")
    warmup: float = Field(0.0, ge=0, lt=1, description="fraction of training over which the term ramps up linearly "
                          "(mdistiller: 20 of 240 epochs)")


class ABF(nn.Module):
    """Attention-based fusion: a student level, fused with the (upsampled) residual from the deeper levels."""

    def __init__(self, dims: int, in_ch: int, mid: int, out_ch: int, fuse: bool) -> None:
        super().__init__()
        self.reduce = nn.Sequential(conv(dims, in_ch, mid), batch_norm(dims, mid))
        self.expand = nn.Sequential(conv(dims, mid, out_ch, kernel=3), batch_norm(dims, out_ch))
        self.attention = nn.Sequential(conv(dims, 2 * mid, 2, bias=True), nn.Sigmoid()) if fuse else None

    def forward(self, x: Tensor, residual: Tensor | None, size: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        """(output with the teacher's channels at `size`, the fused residual for the next shallower level)."""
        x = self.reduce(x)
        if self.attention is not None and residual is not None:
            residual = F.interpolate(residual, size=x.shape[2:], mode="nearest")
            z = self.attention(torch.cat([x, residual], dim=1))
            x = x * z[:, :1] + residual * z[:, 1:]
        if tuple(x.shape[2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="nearest")
        return self.expand(x), x


def hcl(fs: Tensor, ft: Tensor) -> Tensor:
    """Hierarchical context loss: MSE at full size plus at 4, 2 and 1 cells per axis, halving weights."""
    loss, weight, total = F.mse_loss(fs, ft), 1.0, 1.0
    for cells in (4, 2, 1):
        if cells >= min(fs.shape[2:]):
            continue
        weight /= 2
        size = (cells,) * (fs.dim() - 2)
        loss = loss + weight * F.mse_loss(pool_to(fs, size), pool_to(ft, size))
        total += weight
    return loss / total


@register("reviewkd")
class ReviewKD(Progressive, PairMethod):
    """Knowledge review: each teacher level is matched by a fusion of the same and deeper student levels.

    Attention-based fusion (ABF) modules, deep to shallow, compared with the hierarchical context loss (HCL)."""

    paper = "Chen, Liu, Zhao, Jia. Distilling Knowledge via Knowledge Review. CVPR 2021"
    Params = ReviewParams

    def prepare(self, student: Outputs, teacher: Outputs | None, num_samples: int) -> None:
        """One ABF per level, from the student's channels to the teacher's (all levels but the deepest fuse)."""
        self.require_maps(student, teacher)
        pairs = self.params.pairs()
        modules = []
        for i, (s, t) in enumerate(pairs):
            fs, ft = student.features[s], teacher.features[t]
            modules.append(ABF(fs.dim() - 2, fs.shape[1], self.params.mid_channels, ft.shape[1],
                               fuse=i < len(pairs) - 1).to(fs.device))
        self.fusions = nn.ModuleList(modules)

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        maps = self.maps(student, teacher)
        total, residual = torch.zeros((), device=student.logits.device), None
        for fusion, (fs, ft) in reversed(list(zip(self.fusions, maps))):
            out, residual = fusion(fs, residual, tuple(ft.shape[2:]))
            total = total + hcl(out, ft)
        return self.ramp() * total
