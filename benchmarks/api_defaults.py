"""`distil.distill(...)` with its defaults, as a new user calls it: own modules, a plain TensorDataset (digits).

Two user-written students (an MLP 64-12-10 and a small CNN) learn from a user-trained MLP teacher, against the
loop a user would write first (SGD lr 0.1, momentum 0.9, constant LR, 30 epochs, cross-entropy). For each seed:
the plain loop's student, `distill(..., losses=[CE()])` (the API alone) and `distill(...)` with every default.
Writes benchmarks/results/api_defaults.md (test top-1 mean ± std over the seeds, the chosen learning rates).

Run: .venv/bin/python benchmarks/api_defaults.py   (a few minutes on 2 CPU cores; --seeds, --epochs)
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import distil
from distil.checkpoint import atomic_write_text
from distil.methods import CE


def digits(seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """sklearn's digits as (N, 1, 8, 8) floats in [0, 1]; 80 / 20 split by a seeded permutation."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16
    y = torch.tensor(y)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    cut = int(0.8 * len(y))
    return TensorDataset(x[order[:cut]], y[order[:cut]]), TensorDataset(x[order[cut:]], y[order[cut:]])


def mlp_student() -> nn.Module:
    """The user's small MLP: 64-12-10."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.ReLU(), nn.Linear(12, 10))


def cnn_student() -> nn.Module:
    """The user's small CNN: one 3x3 conv of 8 channels, pooling, a linear head."""
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(8 * 4 * 4, 10))


def teacher_model() -> nn.Module:
    """The user's teacher: an MLP 64-256-256-10."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 10))


def plain_loop(model: nn.Module, train: TensorDataset, epochs: int, seed: int) -> nn.Module:
    """The ten lines a user writes first: SGD(0.1, momentum 0.9), constant LR, cross-entropy."""
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(epochs):
        for x, y in DataLoader(train, batch_size=64, shuffle=True):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, data: TensorDataset) -> float:
    """Top-1 on `data`."""
    x, y = data.tensors
    return (model.eval()(x).argmax(-1) == y).float().mean().item()


def chosen_lr(result: distil.DistillResult) -> float:
    """The learning rate the run trained with (the range test's pick)."""
    return result.lr


def main() -> None:
    """Every student, seed and setting; the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30, help="epochs of the plain loop")
    parser.add_argument("--out", default="benchmarks/results/api_defaults.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    train, test = digits()
    torch.manual_seed(0)
    teacher = plain_loop(teacher_model(), train, args.epochs, 0)
    teacher_acc = accuracy(teacher, test)
    rows, lrs, start = {}, {}, time.perf_counter()
    for label, make in (("MLP 64-12-10", mlp_student), ("CNN 8-channel", cnn_student)):
        scores: dict[str, list[float]] = {"plain loop (alone)": [], "distill, CE only": [], "distill, defaults": []}
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            init = make()
            model = plain_loop(_copy(init), train, args.epochs, seed)
            scores["plain loop (alone)"].append(accuracy(model, test))
            alone = distil.distill(teacher, _copy(init), train, test=test, losses=[CE()], seed=seed)
            scores["distill, CE only"].append(alone.metrics["top1"])
            kd = distil.distill(teacher, _copy(init), train, test=test, seed=seed)
            scores["distill, defaults"].append(kd.metrics["top1"])
            lrs.setdefault(label, []).append((chosen_lr(alone), chosen_lr(kd)))
            print(label, seed, {k: round(v[-1], 4) for k, v in scores.items()}, lrs[label][-1], flush=True)
        rows[label] = scores
    write(args, teacher_acc, rows, lrs, time.perf_counter() - start)


def _copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def mean_std(values: list[float]) -> str:
    """'mean ± std' in percent."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * spread:.2f}"


def write(args, teacher_acc: float, rows: dict, lrs: dict, seconds: float) -> None:
    """The results table as markdown."""
    settings = list(next(iter(rows.values())))
    lines = ["# `distil.distill` defaults on user modules (digits)", "",
             f"Command: `.venv/bin/python benchmarks/api_defaults.py --seeds {args.seeds} --epochs {args.epochs}` "
             f"({seconds / 60:.1f} minutes on a shared 2-core CPU machine, torch {torch.__version__}, 1 thread).", "",
             f"Data: sklearn digits, 1,437 train / 360 test, a plain `TensorDataset`. Teacher: the user's MLP "
             f"64-256-256-10 trained by the plain loop, test top-1 **{100 * teacher_acc:.2f}%**. The plain loop: "
             f"SGD lr 0.1, momentum 0.9, constant LR, batch 64, {args.epochs} epochs. `distill` is called with no "
             "settings but the losses (CE only) or nothing (defaults); it picks its learning rate by a range test.",
             "", "| student | " + " | ".join(settings) + " | lr chosen (CE only / defaults) |",
             "|---|" + "---:|" * (len(settings) + 1)]
    for label, scores in rows.items():
        chosen = ", ".join(f"{a:.2g} / {b:.2g}" for a, b in lrs[label])
        lines.append(f"| {label} | " + " | ".join(mean_std(scores[s]) for s in settings) + f" | {chosen} |")
    lines += ["", f"Test top-1 %, mean ± std over seeds 0..{args.seeds - 1} (the same initial student per seed)."]
    atomic_write_text(Path(args.out), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
