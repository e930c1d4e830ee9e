"""Causal-LM distillation on Rotten Tomatoes lines, sized for a shared 2-core CPU, per seed: one BPE teacher run
(teacher, the student alone, fkl from a shared top-32 cache), students distilled from the live teacher (fkl / rkl /
jsd / on-policy jsd), fkl from caches of k = 8, 128 and full logits; then a teacher with the MiniLM WordPiece
tokenizer and byte-level BPE students (alone, ULD, GOLD) reading its top-32 cache through character alignment (GOLD
reads the cache ULD's run built: the teacher does not run again). Held-out bits per character (comparable across
tokenizers). Writes benchmarks/results/lm.md.

    nice -n 10 .venv/bin/python benchmarks/lm.py [--seeds 3] [--limit 600]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from distil.pipeline import run_recipe
from distil.recipe import validate_recipe

BASE = {
    "data": {"name": "rotten_tomatoes", "limit": 600},
    "lm": {"tokenizer": "bpe", "bpe_vocab": 1000, "max_length": 48, "generate_tokens": 16,
           "teacher": {"layers": 2, "hidden": 96, "heads": 4}, "student": {"layers": 1, "hidden": 32, "heads": 2}},
    "teacher": {"epochs": 15, "lr": 3e-3},
    "distill": {"losses": [{"name": "lm_ce", "weight": 0.5}, {"name": "fkl", "weight": 0.5}]},
    "train": {"epochs": 4, "batch_size": 32, "lr": 3e-3, "grad_clip": 1.0},
}


def losses(name: str) -> list[dict]:
    """The student's own next-token loss and one teacher term, half each."""
    return [{"name": "lm_ce", "weight": 0.5}, {"name": name, "weight": 0.5}]


LIVE = {  # contender -> (teacher term, lm overrides)
    "fkl": ("fkl", {}),
    "rkl": ("rkl", {}),
    "jsd": ("jsd", {}),
    "on-policy jsd (lambda 0.5)": ("jsd", {"on_policy": 0.5}),
}
CACHED = {"fkl, cache top-8": 8, "fkl, cache top-128": 128, "fkl, cache full logits": None}
CROSS = {"uld": "ULD", "gold": "GOLD"}
WORDPIECE = "hf:all-MiniLM-L6-v2"


def recipe(name: str, seed: int, limit: int, **sections) -> object:
    """BASE with `sections` merged in (one level deep)."""
    raw = json.loads(json.dumps(BASE))
    raw["name"], raw["seed"] = name, seed
    raw["data"]["limit"] = limit
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return validate_recipe(raw)


def one_seed(seed: int, limit: int, runs: Path, rows: dict[str, list[float]], costs: dict[str, list[dict]]) -> None:
    """Every contender of one seed: bits per character into `rows`, cache and stage times into `costs`."""
    def score(label: str, result, role: str = "student") -> None:
        rows.setdefault(label, []).append(result.results["models"][role]["bits_per_char"])

    def cost(label: str, result) -> None:
        timings, cache = result.results["timings_s"], result.results.get("cache", {})
        costs.setdefault(label, []).append({"distill_s": timings["distill"], "cache_s": timings.get("cache"),
                                            "bytes_per_token": cache.get("bytes_per_token"),
                                            "bytes": cache.get("bytes")})

    shared = runs / f"cache-{seed}-top32"
    first = run_recipe(recipe(f"teacher-{seed}", seed, limit, cache={"topk": 32, "path": str(shared)}), runs,
                       quiet=True)
    score("teacher (BPE, 2x96)", first, "teacher")
    score("student alone (BPE, 1x32)", first, "alone")
    score("student fkl, cache top-32", first)
    cost("fkl, cache top-32", first)
    teacher = {"folder": str(runs / f"teacher-{seed}" / "models" / "teacher")}
    for name, (term, lm) in LIVE.items():
        result = run_recipe(recipe(f"live-{term}-{bool(lm)}-{seed}", seed, limit, lm={**lm, "teacher": teacher},
                                   distill={"losses": losses(term), "baseline": False}), runs, quiet=True)
        score(f"student {name}", result)
        cost(name, result)
    for name, k in CACHED.items():
        result = run_recipe(recipe(f"cache-{k}-{seed}", seed, limit, lm={"teacher": teacher}, cache={"topk": k},
                                   distill={"losses": losses("fkl"), "baseline": False}), runs, quiet=True)
        score(f"student {name}", result)
        cost(name, result)
    wp_cache = {"topk": 32, "path": str(runs / f"cache-{seed}-wordpiece-top32")}
    cross = {"tokenizer": WORDPIECE, "student_tokenizer": "bpe"}
    for i, (term, label) in enumerate(CROSS.items()):
        lm = cross if i == 0 else {**cross, "teacher": {"folder": str(runs / f"wp-{seed}" / "models" / "teacher")}}
        result = run_recipe(recipe(f"wp-{seed}" if i == 0 else f"wp-{term}-{seed}", seed, limit, lm=lm,
                                   cache=wp_cache, distill={"losses": losses(term), "baseline": i == 0}),
                            runs, quiet=True)
        if i == 0:
            score("teacher (WordPiece, 2x96)", result, "teacher")
            score("student alone (BPE, 1x32, on the WordPiece teacher's samples)", result, "alone")
        score(f"student {label} from the WordPiece teacher's top-32 cache (BPE student)", result)
        cost(f"{label} (WordPiece teacher -> BPE student)", result)
        costs.setdefault("truncated", []).append(result.results["corpus"]["student_truncated"])
    print(json.dumps({k: round(v[-1], 4) for k, v in rows.items()}, indent=1), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=600)
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = Path(tempfile.mkdtemp(prefix="lm-bench-"))
    rows: dict[str, list[float]] = {}
    costs: dict[str, list[dict]] = {}
    started, cpu = time.perf_counter(), time.process_time()
    for seed in range(args.seeds):
        one_seed(seed, args.limit, runs, rows, costs)
    write(rows, costs, args, time.perf_counter() - started, time.process_time() - cpu)


def median(costs: list[dict], key: str) -> float:
    """The median of one cost over the seeds."""
    return statistics.median(c[key] for c in costs)


def write(rows: dict[str, list[float]], costs: dict[str, list[dict]], args, wall: float, cpu: float) -> None:
    """benchmarks/results/lm.md from the measured rows and costs."""
    alone = statistics.median(rows["student alone (BPE, 1x32)"])
    lines = ["# Causal-LM distillation (benchmarks/lm.py)", "",
             f"`nice -n 10 .venv/bin/python benchmarks/lm.py --seeds {args.seeds} --limit {args.limit}` "
             f"({wall / 60:.1f} minutes wall, {cpu / 60:.1f} CPU-minutes): Rotten Tomatoes lines "
             f"({args.limit} snippets, 70/10/20 split), "
             "GPT-2-style models built from a config (teacher 2 layers x 96, students 1 layer x 32; 15 teacher and 4 "
             "student epochs), a byte-level BPE of 1,000 tokens trained on the training split, seeds "
             f"0..{args.seeds - 1} (the seed changes the teacher, the student's initialisation and the batch "
             "order; the split is fixed). A shared 2-core CPU, one torch thread, other jobs beside it: times are "
             "noisy. Held-out bits per character on the test split: lower is better, and it compares across "
             "tokenizers (perplexity does not).", "",
             "| model | bits/char (median) | vs BPE student alone | per seed |", "|---|---:|---:|---|"]
    for name, values in rows.items():
        gain = "" if "alone" in name or name.startswith("teacher") else f"{statistics.median(values) - alone:+.4f}"
        lines.append(f"| {name} | {statistics.median(values):.4f} | {gain} | "
                     f"{', '.join(f'{v:.4f}' for v in values)} |")
    truncated = costs.pop("truncated", [])
    cross_alone = rows.get("student alone (BPE, 1x32, on the WordPiece teacher's samples)")
    for label in CROSS.values() if cross_alone else ():
        name = f"student {label} from the WordPiece teacher's top-32 cache (BPE student)"
        lines.append(f"\n{label} vs the same BPE student alone on the same samples: "
                     f"{statistics.median(rows[name]) - statistics.median(cross_alone):+.4f} bits per character "
                     "(median over seeds).")
    if truncated:
        lines.append(f"\nThe training samples are cut to fit the teacher's tokenizer (so one cache serves every "
                     f"student); {max(truncated)} of them need more than {BASE['lm']['max_length']} BPE tokens and "
                     "are truncated for the BPE student in the cross-tokenizer runs.")
    lines += ["", "Cost of the teacher (medians over seeds; distill stage = 4 student epochs):", "",
              "| teacher source | cache build (s) | cache bytes per position | cache size (MB) | distill stage (s) |",
              "|---|---:|---:|---:|---:|"]
    for name, values in costs.items():
        cached = values[0]["bytes"] is not None
        built = [c["cache_s"] for c in values if c["cache_s"] is not None]
        lines.append(f"| {name} | {f'{statistics.median(built):.1f}' if built else '-'} | "
                     + (f"{median(values, 'bytes_per_token'):.0f} | {median(values, 'bytes') / 1e6:.2f}"
                        if cached else "live teacher | -") + f" | {median(values, 'distill_s'):.1f} |")
    lines += ["", "A cache position stores k fp16 log-probabilities, k token ids (uint16 for vocabularies up to "
              "65,536), the rest's mass (fp32) and the character span of the teacher's token (2 x int32, what a "
              "student with another tokenizer aligns on); padded positions are stored too. DistillKit's "
              "recommended setting is about 300 B/token. The GOLD run reads the WordPiece teacher's top-32 cache "
              "that the ULD run built (cache build ~0 s: no block was missing; the teacher does not run)."]
    out = Path(__file__).parent / "results" / "lm.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(out.read_text())


if __name__ == "__main__":
    main()
