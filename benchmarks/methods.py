"""Every registered distillation method on one fixed teacher -> student pair, against the student trained alone.

MNIST-1D (3,600 train / 1,000 test signals of length 40, 10 classes): a 4-block CNN teacher (16-32-64-128
channels, 34k parameters) is trained once; a CNN student learns from it with each method (plus the label loss),
3 seeds, the same epochs, optimizer and schedule, and alone with the labels only. The default student, 3 blocks of
8-16-32 channels (2.4k parameters), fits its training set (about 99% train accuracy alone); `--student 16,32`, the
2-block student of the first tables (2.0k parameters), cannot (its receptive field is too small for MNIST-1D), and is
run for contrast. The teacher's logits and every tapped feature the methods read are computed once into the teacher
cache, so epoch times show each method's own overhead.

`--weights published` uses each method's CIFAR-100 weight; `--weights auto` gives every method `weight: auto`
beside 1·CE (its initial gradient norm equal to CE's, measured by the engine before training).

Writes benchmarks/results/methods_<weights>_<channels>.md (top-1 mean ± std, Δ vs alone paired by seed, train
accuracy, epoch time relative to alone) and the raw results beside it as .json (`--table FILE.json` rewrites the
table from them).

Run: .venv/bin/python benchmarks/methods.py [--weights auto] [--student 16,32]   (about 17 minutes each on one core
of this 2-core machine; --epochs, --seeds, --only)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from distil.cache import CacheBuilder, TeacherCache, open_cache
from distil.checkpoint import atomic_write_text
from distil.data import load_dataset
from distil.engine import Fit, predict, seed_everything, targets_of
from distil.methods import REGISTRY, Objective
from distil.methods.base import method_class
from distil.models import build_model
from distil.recipe import CacheConfig, DataConfig, ModelConfig, TrainConfig
from distil.teachers import LiveTeacher

TEACHER = ModelConfig(name="cnn", channels=[16, 32, 64, 128])
TEACHER_EPOCHS = 30
LABELS = ("ce", 1.0, {})


def method_terms(channels: list[int]) -> dict[str, list[tuple[str, float, dict]]]:
    """name -> loss terms (method, weight, params) for a student cnn of these channels: the label loss plus the
    method, weighted as its paper / RepDistiller / mdistiller run it on CIFAR-100 where our normalization is theirs;
    otherwise scaled to a comparable size (notes).

    Feature methods pair student and teacher blocks of the same resolution (block i halves the length i+1 times in
    both networks), as RepDistiller pairs stage outputs: the student's last block with the teacher's block of its
    index, two-level methods add the block before it; AB and OFD read the same blocks before their ReLU. FSP needs
    equal widths: its two student blocks pair with the teacher blocks of their channel counts."""
    blocks = len(channels)
    last, before = f"features.{blocks - 1}", f"features.{blocks - 2}"
    fsp_teacher = [f"features.{TEACHER.channels.index(c)}" for c in channels[-2:]]
    s_last = t_last = last
    s_pre = t_pre = f"{last}.2:input"
    s_both = t_both = [before, last]
    return {
        "kd": [("ce", 0.1, {}), ("kd", 0.9, {"temperature": 4})],
        "dkd": [LABELS, ("dkd", 1.0, {"alpha": 1, "beta": 8, "temperature": 4, "warmup": 0.08})],
        "dist": [LABELS, ("dist", 1.0, {"beta": 2, "gamma": 2, "temperature": 4})],
        "ls_kd": [("ce", 0.1, {}), ("ls_kd", 9.0, {"temperature": 2})],
        "mlkd": [LABELS, ("mlkd", 1.0, {})],
        "ctkd": [("ce", 0.1, {}), ("ctkd", 0.9, {})],
        "nkd": [LABELS, ("nkd", 1.0, {})],
        "mse_logits": [("ce", 0.1, {}), ("mse_logits", 0.9, {})],
        "fitnet": [LABELS, ("fitnet", 100.0, {"student": s_last, "teacher": t_last})],
        "at": [LABELS, ("at", 1000.0, {"student": s_both, "teacher": t_both})],
        "nst": [LABELS, ("nst", 50.0, {"student": s_last, "teacher": t_last})],
        "fsp": [LABELS, ("fsp", 50.0, {"student": s_both, "teacher": fsp_teacher})],
        "ab": [LABELS, ("ab", 0.0, {"student": s_pre, "teacher": t_pre, "init_epochs": 1})],
        "vid": [LABELS, ("vid", 1.0, {"student": s_both, "teacher": t_both})],
        "ft": [LABELS, ("ft", 3.0, {"student": s_last, "teacher": t_last, "init_epochs": 1})],
        "ofd": [LABELS, ("ofd", 1.0, {"student": s_pre, "teacher": t_pre})],
        "reviewkd": [LABELS, ("reviewkd", 1.0, {"student": s_both, "teacher": t_both, "warmup": 0.08})],
        "sp": [LABELS, ("sp", 3000.0, {})],
        "rkd": [LABELS, ("rkd", 1.0, {})],
        "pkt": [LABELS, ("pkt", 30000.0, {})],
        "cc": [LABELS, ("cc", 100.0, {})],
        "crd": [LABELS, ("crd", 0.8, {})],
        "fkl": [("ce", 0.1, {}), ("fkl", 0.9, {})],
        "rkl": [("ce", 0.1, {}), ("rkl", 0.9, {})],
        "jsd": [("ce", 0.1, {}), ("jsd", 0.9, {})],
        "skew_fkl": [("ce", 0.1, {}), ("skew_fkl", 0.9, {})],
        "skew_rkl": [("ce", 0.1, {}), ("skew_rkl", 0.9, {})],
        "tvd": [("ce", 0.1, {}), ("tvd", 0.9, {})],
    }


METHODS: dict[str, list[tuple[str, float, dict]]] = {}  # filled by main() for the chosen student
# Published CIFAR-100 top-1 for resnet56 -> resnet20 (student alone: 69.06): RepDistiller's README table (Tian et al.
# 2020), mdistiller's README for DKD, the CTKD README for KD + CTKD. Methods without a number there are left out.
PUBLISHED = {
    "crd": 71.16, "kd": 70.66, "at": 70.55, "vid": 70.38, "pkt": 70.34, "fsp": 69.95, "ft": 69.84, "sp": 69.67,
    "cc": 69.63, "rkd": 69.61, "nst": 69.60, "ab": 69.47, "fitnet": 69.21, "dkd": 71.97, "ctkd": 71.19,
}
PUBLISHED_ALONE = 69.06
# text-model losses, the label loss and the soft-tree students' loss: not for this CNN pair
NOT_HERE = {"hidden_mse", "embedding_mse", "attention_mse", "attention_kl", "lm_ce", "ce", "soft_tree_kd"}


def objective(terms: list[tuple[str, float, dict]]) -> Objective:
    """The weighted terms as an Objective."""
    return Objective([method_class(name)(weight=weight, **params) for name, weight, params in terms])


def auto_weighted(terms: list[tuple[str, float, dict]]) -> list[tuple[str, float | str, dict]]:
    """1·CE plus the method's own terms at weight auto (1:1 with CE's gradient); AB keeps weight 0 (it only
    initialises the student)."""
    own = [(n, w if n == "ab" else "auto", p) for n, w, p in terms if n != "ce"]
    return [LABELS, *own]


def mean_std(values: list[float], scale: float = 100.0) -> str:
    """'mean ± std' (scaled)."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{scale * statistics.mean(values):.2f} ± {scale * spread:.2f}"


def main() -> None:
    """Train the teacher, cache it, distill every method for every seed, write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="*", help="methods to run (default: all)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--weights", choices=["published", "auto"], default="published")
    parser.add_argument("--student", default="8,16,32", help="the student cnn's channels, e.g. 16,32")
    parser.add_argument("--table", type=Path, help="only rewrite the table from a results .json of an earlier run")
    args = parser.parse_args()
    channels = [int(c) for c in args.student.split(",")]
    student_cfg = ModelConfig(name="cnn", channels=channels)
    METHODS.update(method_terms(channels))
    if args.weights == "auto":
        for name in METHODS:
            METHODS[name] = auto_weighted(METHODS[name])
    if args.out is None:
        width = "-".join(map(str, channels))
        args.out = Path(__file__).parent / "results" / f"methods_{args.weights}_{width}.md"
    if args.table:
        saved = json.loads(args.table.read_text())
        args.epochs, args.seeds = saved["epochs"], saved["seeds"]
        write_table(args, saved["results"], saved["teacher_top1"], saved["seconds"])
        return
    torch.set_num_threads(1)  # tiny convolutions: one thread is as fast and gives steadier times on a busy machine
    device = torch.device("cpu")
    missing = set(REGISTRY) - NOT_HERE - set(METHODS)
    if missing:
        raise SystemExit(f"no benchmark setting for {sorted(missing)}")
    names = args.only or list(METHODS)
    splits = load_dataset(DataConfig(name="mnist1d"), seed=0)
    cfg = TrainConfig(epochs=args.epochs, batch_size=128, optimizer="adamw", lr=3e-3, weight_decay=1e-4,
                      scheduler="cosine")
    test_y = targets_of(splits.test)

    train_y = targets_of(splits.train)

    def top1(model: torch.nn.Module, split: str = "test") -> float:
        data, target = (splits.test, test_y) if split == "test" else (splits.train, train_y)
        return (predict(model, data, device).argmax(-1) == target).float().mean().item()

    start = time.perf_counter()
    seed_everything(0)
    teacher = build_model(TEACHER, splits.input_shape, splits.num_classes)
    Fit(stage="teach", model=teacher, objective=objective([LABELS]), train=splits.train, val=None,
        cfg=cfg.model_copy(update={"epochs": TEACHER_EPOCHS}), device=device, quiet=True).run()
    teacher_top1 = top1(teacher)
    print(f"teacher: {100 * teacher_top1:.2f}% ({time.perf_counter() - start:.0f} s)", flush=True)
    results: dict[str, dict[str, list[float]]] = {}
    caches: dict[tuple[str, ...], TeacherCache] = {}
    with tempfile.TemporaryDirectory() as folder:

        def cache_for(name: str) -> TeacherCache:
            """A cache of the teacher's logits and exactly the features this method reads (built once per set)."""
            taps = tuple(objective(METHODS[name]).teacher_taps())
            if taps not in caches:
                where = Path(folder) / str(len(caches))
                CacheBuilder(where, LiveTeacher(teacher, taps=taps), splits.train, CacheConfig(dtype="fp32"),
                             views=1, fingerprint="benchmark", device=device, quiet=True).build()
                caches[taps] = open_cache(where, "benchmark")
            return caches[taps]

        sources = {name: None if name == "alone" else cache_for(name) for name in ["alone", *names]}
        for seed in args.seeds:  # seeds outside, methods inside: a change in the machine's load hits all alike
            for name, source in sources.items():
                runs = results.setdefault(name, {"top1": [], "train": [], "epoch_s": [], "stage_s": [],
                                                 "weight": []})
                seed_everything(seed)  # the same initial student for every method of a seed
                student = build_model(student_cfg, splits.input_shape, splits.num_classes)
                t0 = time.perf_counter()
                result = Fit(stage="distill", model=student, objective=objective(METHODS.get(name, [LABELS])),
                             train=splits.train, val=None, cfg=cfg, device=device, seed=seed, teacher=source,
                             quiet=True).run()
                history = result.history
                runs["top1"].append(top1(student))
                runs["train"].append(top1(student, "train"))
                if result.balance is not None:
                    runs["weight"].append(list(result.balance.weights.values())[0])
                runs["epoch_s"].append(statistics.mean(r["seconds"] for r in history))
                runs["stage_s"].append(time.perf_counter() - t0 - sum(r["seconds"] for r in history))
                print(f"seed {seed} {name}: {100 * runs['top1'][-1]:.2f}% ({time.perf_counter() - start:.0f} s)",
                      flush=True)
    seconds = time.perf_counter() - start
    saved = {"epochs": args.epochs, "seeds": args.seeds, "results": results, "teacher_top1": teacher_top1,
             "seconds": seconds}
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(saved, indent=1))
    write_table(args, results, teacher_top1, seconds)


def write_table(args: argparse.Namespace, results: dict, teacher_top1: float, seconds: float) -> None:
    """The markdown table, sorted by mean top-1, with the settings, the published numbers and the notes."""
    alone = results["alone"]
    base_epoch = statistics.mean(alone["epoch_s"])
    rows = sorted(results.items(), key=lambda kv: -statistics.mean(kv[1]["top1"]))
    lines = [
        "# Every method on one teacher → student pair (MNIST-1D)",
        "",
        f"Command: `.venv/bin/python benchmarks/methods.py --weights {args.weights} --student {args.student}` "
        f"(seeds {', '.join(map(str, args.seeds))}; "
        f"{args.epochs} epochs; {seconds / 60:.0f} minutes in all on a 2-core CPU machine, torch "
        f"{torch.__version__}, 1 thread).",
        "",
        f"Teacher: `cnn` 16-32-64-128 ({TEACHER_EPOCHS} epochs, seed 0), top-1 **{100 * teacher_top1:.2f}%**. "
        f"Student: `cnn` {args.student.replace(',', '-')}. Weights: {args.weights}. Every run: AdamW, lr 3e-3, "
        "weight decay 1e-4, cosine schedule, batch 128, the "
        "same initial student per seed; teacher outputs and tapped features read from the teacher cache (fp32). "
        "The last column is the published CIFAR-100 top-1 for resnet56 → resnet20 (Δ vs that student alone, "
        f"{PUBLISHED_ALONE}).",
        "",
        "| method | top-1 % (mean ± std) | Δ vs alone (points) | train acc % | epoch time vs alone | loss terms | "
        "CIFAR-100 published (Δ) |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for name, runs in rows:
        delta = [a - b for a, b in zip(runs["top1"], alone["top1"])]
        terms = "1·ce" if name == "alone" else " + ".join(f"{w if isinstance(w, str) else format(w, 'g')}·{n}"
                                                          for n, w, _ in METHODS[name])
        if runs["weight"]:
            terms += f" (auto: {statistics.mean(runs['weight']):.3g})"
        stage = f" (+{statistics.mean(runs['stage_s']):.1f} s own stage)" if name in ("ab", "ft") else ""
        label = "student alone" if name == "alone" else f"`{name}`"
        published = (f"{PUBLISHED[name]:.2f} ({PUBLISHED[name] - PUBLISHED_ALONE:+.2f})" if name in PUBLISHED
                     else f"{PUBLISHED_ALONE:.2f}" if name == "alone" else "—")
        lines.append(f"| {label} | {mean_std(runs['top1'])} | {'—' if name == 'alone' else mean_std(delta)} | "
                     f"{mean_std(runs['train'])} | {statistics.mean(runs['epoch_s']) / base_epoch:.2f}×{stage} | "
                     f"{terms} | {published} |")
    lines += ["", *summary(results), *(NOTES if args.weights == "published" else AUTO_NOTES),
              *disagreements(results), ""]
    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines))


def summary(results: dict) -> list[str]:
    """How many methods reach the student alone, and whether KD's gain exceeds the seed spread."""
    alone = results["alone"]["top1"]
    methods = [n for n in results if n != "alone"]
    at_least = [n for n in methods if statistics.mean(results[n]["top1"]) >= statistics.mean(alone)]
    lines = [f"- {len(at_least)} of {len(methods)} methods at or above the student alone (mean over seeds)."]
    if "kd" in results and len(alone) > 1:
        delta = [a - b for a, b in zip(results["kd"]["top1"], alone)]
        side = "above" if statistics.mean(delta) > 0 else "below"
        beyond = abs(statistics.mean(delta)) > statistics.stdev(delta)
        lines.append(f"- KD − alone: {100 * statistics.mean(delta):+.2f} ± {100 * statistics.stdev(delta):.2f} points "
                     f"(paired by seed): {side} alone, {'beyond' if beyond else 'within'} the seed spread.")
    return [*lines, ""]


def disagreements(results: dict) -> list[str]:
    """Notes on where our ranking of the published methods differs from the published one (by 4+ places)."""
    shared = [n for n in PUBLISHED if n in results]
    ours = sorted(shared, key=lambda n: -statistics.mean(results[n]["top1"]))
    theirs = sorted(shared, key=lambda n: -PUBLISHED[n])
    moved = [(n, theirs.index(n) + 1, ours.index(n) + 1) for n in shared if abs(ours.index(n) - theirs.index(n)) >= 4]
    if not moved:
        return [f"- Among the {len(shared)} methods with a published number, no method's rank here differs from its "
                "published rank by 4 places or more."]
    listed = "; ".join(f"`{n}` {a} → {b}" for n, a, b in sorted(moved, key=lambda m: m[2]))
    return [f"- Rank disagreements with the published table (among the {len(shared)} methods it has; published "
            f"rank → rank here, moves of 4+ places): {listed}. They are reported as measured, not tuned away."]


NOTES = [
    "Notes",
    "",
    "- Parameters: each method's defaults (`distil methods`) except where the loss terms column or "
    "benchmarks/methods.py says otherwise. Feature methods pair blocks of the same resolution, as RepDistiller "
    "pairs stage outputs: the student's last block with the teacher's block of the same index (`features.2` ↔ "
    "`features.2` for the 3-block student, `features.1` ↔ `features.1` for the 2-block one); two-level methods add "
    "the block before it; AB and OFD read the same blocks before their ReLU; FSP pairs the student's last two blocks "
    "with the teacher's blocks of the same widths. Relation methods and CRD read the pooled features the "
    "classifiers see.",
    "- Weights follow RepDistiller / mdistiller on CIFAR-100 where our normalization is theirs (FitNet 100, AT "
    "1000, NST 50, FSP 50, VID 1, SP 3000, RKD 1, PKT 30000, CRD 0.8, KD 0.9 with CE 0.1, DKD α 1 β 8); FT (per-"
    "sample L1 norm instead of a mean) and CC (Gaussian-kernel correlation instead of RepDistiller's shortcut) are "
    "scaled to a comparable loss size, not tuned. Since distil made AT and SP scale-free (unit-vector distances "
    "averaged over the batch), their CIFAR weights are far too large here: that is what `weight: auto` is for. AB, "
    "as in RepDistiller, only initialises the student (its own stage of 1 epoch) and then has weight 0; FT "
    "pre-trains its paraphraser for 1 epoch. Their own-stage time is not in the epoch-time ratio.",
    "- The sequence divergences (fkl … tvd) are applied to the classifier's logits at T = 1 (fkl at T = 1 is KD "
    "at T = 1).",
    "- Epoch times come from the engine's per-epoch timer with the teacher read from the cache, so they are each "
    "method's own cost (hooks, connectors, memory bank) on top of the student's; times on this machine drift "
    "by up to ±20% between runs.",
    "- This is a 10-class 1-D task with a tiny student, 60 epochs and no augmentation, far from CIFAR-100 with "
    "ResNets and 240 epochs; a different ranking is expected, and differences within about one standard deviation "
    "are not a ranking at all.",
]

AUTO_NOTES = [
    "Notes",
    "",
    "- Every method: 1·CE plus its own terms at `weight: auto` (its gradient norm on the student, averaged over 4 "
    "batches before training with warm-ups at full strength, set equal to CE's; the weight shown is its mean over "
    "seeds); method parameters and layer pairs as in the published-weights table. AB keeps weight 0 after its "
    "initialisation stage. Same lr (3e-3) and schedule as there, so only the weights differ.",
    "- Scale-free forms: AT and SP squared distances of unit vectors summed over positions / rows and averaged over "
    "the batch, PKT's KL per sample, MLKD's batch and class terms as means, DKD's β = max(1, 8·(C−1)/99) = 1 for 10 "
    "classes, CTKD's temperature trained by SGD.",
    "- Train accuracy: top-1 on the whole training split after training (the student can fit it or not).",
]


if __name__ == "__main__":
    main()
