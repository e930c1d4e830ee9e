"""Classification metrics: top-k accuracy, macro precision / recall / F1, agreement with a teacher, calibration."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.metrics import precision_recall_fscore_support
from torch import Tensor


def expected_calibration_error(probs: Tensor, target: Tensor, bins: int = 15) -> float:
    """ECE: the confidence-vs-accuracy gap averaged over equal-width confidence bins, weighted by bin size."""
    confidence, predicted = probs.max(dim=-1)
    correct = (predicted == target).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = torch.zeros(())
    for low, high in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            ece += in_bin.float().mean() * (confidence[in_bin].mean() - correct[in_bin].mean()).abs()
    return float(ece)


def classification_metrics(logits: Tensor, target: Tensor, num_classes: int, teacher_logits: Tensor | None = None,
                           ece_bins: int = 15) -> dict[str, float]:
    """Top-1 (and top-5 when there are 10+ classes), macro P/R/F1, NLL, ECE and agreement with the teacher."""
    logits, target = logits.float().cpu(), target.cpu()
    predicted = logits.argmax(-1)
    precision, recall, f1, _ = precision_recall_fscore_support(
        target.numpy(), predicted.numpy(), labels=list(range(num_classes)), average="macro", zero_division=0)
    out = {
        "top1": (predicted == target).float().mean().item(),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "nll": F.cross_entropy(logits, target).item(),
        "ece": expected_calibration_error(logits.softmax(-1), target, ece_bins),
    }
    if num_classes >= 10:
        top5 = logits.topk(5, dim=-1).indices
        out["top5"] = (top5 == target[:, None]).any(-1).float().mean().item()
    if teacher_logits is not None:
        out["agreement"] = (predicted == teacher_logits.float().cpu().argmax(-1)).float().mean().item()
    return out
