"""How close distil's loop is to plain student training, live and with the teacher cache.

One process, same data / teacher / student / optimizer / epochs, contenders interleaved, median of rounds:
  (a) the student alone, plain cross-entropy, a hand-written loop
  (b) a minimal hand-written KD loop with a live teacher
  (c) distil with a live teacher
  (d) distil with the teacher cache
  (e) building the cache (the teacher's one pass)
  (f) a minimal hand-written KD loop reading the teacher's logits from a tensor in RAM: the floor of any cached
      loop, so (d)/(f) is what distil's engine and cache add on top of the KD arithmetic itself
Run: .venv/bin/python benchmarks/speed.py [--rounds 5] [--epochs 2]   (writes benchmarks/results/speed.md)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from distil.cache import CacheBuilder, open_cache
from distil.checkpoint import atomic_write_text
from distil.data import load_dataset
from distil.engine import Fit, predict, targets_of
from distil.methods import CE, KD, Objective
from distil.models import build_model
from distil.recipe import CacheConfig, DataConfig, ModelConfig, TrainConfig
from distil.teachers import LiveTeacher

CPU = torch.device("cpu")


def flops(model: torch.nn.Module, shape: tuple[int, ...]) -> int:
    """Forward FLOPs for one sample."""
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *shape))
    return counter.get_total_flops()


def hand_loop(student, teacher, data, cfg: TrainConfig, epochs: int, seed: int) -> None:
    """The plain loop a user would write: CE alone when teacher is None, else 0.1 CE + 0.9 KD(T=4) against a live
    teacher (a module) or its precomputed logits (a tensor indexed by sample)."""
    optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.lr)
    student.train()
    for epoch in range(epochs):
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed + epoch))
        for start in range(0, len(data), cfg.batch_size):
            index = order[start:start + cfg.batch_size]
            x, y = data.x[index], data.y[index]
            logits = student(x)
            loss = F.cross_entropy(logits, y)
            if teacher is not None:
                if isinstance(teacher, torch.Tensor):
                    t = teacher[index]
                else:
                    with torch.inference_mode():
                        t = teacher(x)
                kd = F.kl_div(F.log_softmax(logits / 4, -1), F.log_softmax(t.clone() / 4, -1), log_target=True,
                              reduction="batchmean") * 16
                loss = 0.1 * loss + 0.9 * kd
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def distil_loop(student, source, data, cfg: TrainConfig, epochs: int, seed: int) -> torch.nn.Module:
    """distil's engine with 0.1 CE + 0.9 KD(T=4) against `source` (a live teacher or the cache)."""
    objective = Objective([CE(weight=0.1), KD(weight=0.9, temperature=4)])
    return Fit(stage="bench", model=student, objective=objective, train=data, val=None, cfg=cfg, device=CPU,
               seed=seed, teacher=source, epochs=epochs, quiet=True).run().model


def contenders_for(r, student, teacher, live, train, cfg, epochs, folder, cache_cfg, models, logits) -> dict:
    """The six timed runs of round `r`, keyed a to f."""
    return {
        "a": lambda: hand_loop(student(), None, train, cfg, epochs, r),
        "b": lambda: hand_loop(student(), teacher, train, cfg, epochs, r),
        "c": lambda: models.__setitem__("c", distil_loop(student(), live, train, cfg, epochs, r)),
        "d": lambda: models.__setitem__("d", distil_loop(student(), open_cache(folder / "c", verify=False), train,
                                                         cfg, epochs, r)),
        "e": lambda: CacheBuilder(folder / f"e{r}", live, train, cache_cfg, views=1, fingerprint="bench",
                                  device=CPU, quiet=True).build(),
        "f": lambda: hand_loop(student(), logits, train, cfg, epochs, r),
    }


def main() -> None:
    """Train the teacher once, then time every contender in interleaved rounds."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    splits = load_dataset(DataConfig(name="mnist1d"))
    train = splits.train
    shape, classes = splits.input_shape, splits.num_classes
    cfg = TrainConfig(epochs=args.epochs, batch_size=128, lr=3e-3, scheduler="none")
    teacher = build_model(ModelConfig(name="cnn", channels=[64, 128]), shape, classes)
    Fit(stage="teach", model=teacher, objective=Objective([CE()]), train=train, val=None, cfg=cfg, device=CPU,
        epochs=10, quiet=True).run()
    live = LiveTeacher(teacher)

    def student():
        torch.manual_seed(1)
        return build_model(ModelConfig(name="cnn", channels=[16, 32]), shape, classes)

    ratio = flops(teacher, shape) / flops(student(), shape)
    folder = Path(tempfile.mkdtemp())
    cache_cfg = CacheConfig(dtype="fp16", batch_size=1024)
    with torch.inference_mode():
        logits = teacher.eval()(train.x).clone()
    timings: dict[str, list[float]] = {k: [] for k in "abcdef"}
    models = {}
    for r in range(args.rounds):
        contenders = contenders_for(r, student, teacher, live, train, cfg, args.epochs, folder, cache_cfg, models,
                                     logits)
        if r == 0:
            CacheBuilder(folder / "c", live, train, cache_cfg, views=1, fingerprint="bench", device=CPU,
                         quiet=True).build()
        for key in (list("abcdef") if r % 2 == 0 else list("fedcba")):
            start = time.perf_counter()
            contenders[key]()
            timings[key].append(time.perf_counter() - start)
        print(f"round {r + 1}: " + ", ".join(f"{k} {timings[k][-1]:.2f}s" for k in "abcdef"), flush=True)

    target = targets_of(splits.test)
    accuracy = {k: (predict(m, splits.test, CPU).argmax(-1) == target).float().mean().item() for k, m in models.items()}
    samples = len(train) * args.epochs
    median = {k: statistics.median(v) for k, v in timings.items()}
    names = {"a": "student alone, plain CE loop", "b": "hand-written KD loop, live teacher",
             "c": "distil, live teacher", "d": "distil, teacher cache (fp16)", "e": "cache build (one teacher pass)",
             "f": "hand-written KD loop, teacher logits in RAM"}
    lines = [
        "# Speed: distil's loop against plain student training",
        "",
        f"Command: `.venv/bin/python benchmarks/speed.py --rounds {args.rounds} --epochs {args.epochs}`, one process, "
        f"contenders interleaved (order reversed every other round), median of {args.rounds} rounds, "
        f"{torch.get_num_threads()} CPU threads.",
        f"Data: MNIST-1D train split ({len(train)} samples), batch 128, AdamW. Teacher: cnn [64, 128] "
        f"({ratio:.1f}× the student's FLOPs per sample). Student: cnn [16, 32].",
        "",
        "| run | median seconds | samples/s | ratio to (a) |",
        "|---|---:|---:|---:|",
    ]
    for k in "abcdf":
        per_second = samples / median[k]
        lines.append(f"| ({k}) {names[k]} | {median[k]:.3f} | {per_second:,.0f} | {median[k] / median['a']:.2f} |")
    lines.append(f"| (e) {names['e']} | {median['e']:.3f} | {len(train) / median['e']:,.0f} | "
                 f"{median['e'] / median['a']:.2f} |")
    lines += [
        "",
        f"- (d)/(a) = {median['d'] / median['a']:.2f} (target ≤ 1.10); (c)/(b) = {median['c'] / median['b']:.2f} "
        f"(target ≤ 1.05); (d)/(f) = {median['d'] / median['f']:.2f}: what the engine and the cache add over the "
        "KD arithmetic itself (with the live teacher, (c)/(b)).",
        f"- Test top-1 after the last round: live {100 * accuracy['c']:.2f}%, cached {100 * accuracy['d']:.2f}% "
        "(same seed; the cache holds fp16 logits).",
        "",
    ]
    out = Path(__file__).parent / "results" / "speed.md"
    atomic_write_text(out, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
