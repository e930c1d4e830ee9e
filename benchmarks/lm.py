"""Causal-LM distillation on Rotten Tomatoes lines, sized for a shared 2-core CPU: one BPE teacher, then students
alone and distilled (fkl / rkl / jsd / on-policy from the live teacher, fkl from the top-k cache at several k),
and a student with the MiniLM WordPiece tokenizer taught by the same teacher through ULD / GOLD from the cache.
Held-out bits per character (comparable across tokenizers). Writes benchmarks/results/lm.md.

    nice -n 10 .venv/bin/python benchmarks/lm.py [--seeds 1] [--limit 1500]
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
    "data": {"name": "rotten_tomatoes", "limit": 1500},
    "lm": {"tokenizer": "bpe", "bpe_vocab": 1000, "max_length": 48, "generate_tokens": 16,
           "teacher": {"layers": 2, "hidden": 96, "heads": 4}, "student": {"layers": 1, "hidden": 32, "heads": 2}},
    "teacher": {"epochs": 8, "lr": 3e-3},
    "distill": {"losses": [{"name": "lm_ce", "weight": 0.5}, {"name": "fkl", "weight": 0.5}]},
    "train": {"epochs": 4, "batch_size": 32, "lr": 3e-3, "grad_clip": 1.0},
}
SAME = {  # contender -> (distill losses, lm overrides, cache)
    "fkl": ([{"name": "lm_ce", "weight": 0.5}, {"name": "fkl", "weight": 0.5}], {}, None),
    "rkl": ([{"name": "lm_ce", "weight": 0.5}, {"name": "rkl", "weight": 0.5}], {}, None),
    "jsd": ([{"name": "lm_ce", "weight": 0.5}, {"name": "jsd", "weight": 0.5}], {}, None),
    "on-policy jsd (lambda 0.5)": ([{"name": "lm_ce", "weight": 0.5}, {"name": "jsd", "weight": 0.5}],
                                   {"on_policy": 0.5}, None),
    "fkl, cache top-8": ([{"name": "lm_ce", "weight": 0.5}, {"name": "fkl", "weight": 0.5}], {}, 8),
    "fkl, cache top-32": ([{"name": "lm_ce", "weight": 0.5}, {"name": "fkl", "weight": 0.5}], {}, 32),
    "fkl, cache top-128": ([{"name": "lm_ce", "weight": 0.5}, {"name": "fkl", "weight": 0.5}], {}, 128),
}
CROSS = {
    "uld (cache top-32)": [{"name": "lm_ce", "weight": 0.5}, {"name": "uld", "weight": 0.5}],
    "gold (cache top-32)": [{"name": "lm_ce", "weight": 0.5}, {"name": "gold", "weight": 0.5}],
}


def recipe(name: str, seed: int, limit: int, **sections) -> object:
    raw = json.loads(json.dumps(BASE))
    raw["name"], raw["seed"] = name, seed
    raw["data"]["limit"] = limit
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return validate_recipe(raw)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--limit", type=int, default=1500)
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = Path(tempfile.mkdtemp(prefix="lm-bench-"))
    rows: dict[str, list[float]] = {}
    extra: dict[str, dict] = {}
    for seed in range(args.seeds):
        first = run_recipe(recipe(f"teacher-{seed}", seed, args.limit, cache={"topk": 32}), runs, quiet=True)
        models = first.results["models"]
        rows.setdefault("teacher (BPE, 2x96)", []).append(models["teacher"]["bits_per_char"])
        rows.setdefault("student alone (BPE, 1x32)", []).append(models["alone"]["bits_per_char"])
        teacher = str(runs / f"teacher-{seed}" / "models" / "teacher")
        extra[f"cache-{seed}"] = first.results["cache"] | {"cache_s": first.results["timings_s"].get("cache", 0)}
        for name, (losses, lm, topk) in SAME.items():
            started = time.perf_counter()
            cache = {"cache": {"topk": topk}} if topk else {}
            result = run_recipe(recipe(f"{name}-{seed}".replace(" ", "_").replace(",", ""), seed, args.limit,
                                       lm={**lm, "teacher": {"folder": teacher}},
                                       distill={"losses": losses, "baseline": False}, **cache), runs, quiet=True)
            rows.setdefault(f"student {name}", []).append(result.results["models"]["student"]["bits_per_char"])
            extra.setdefault(name, {})[seed] = {"distill_s": result.results["timings_s"]["distill"],
                                                "total_s": time.perf_counter() - started}
        wp = {"student_tokenizer": "hf:all-MiniLM-L6-v2", "teacher": {"folder": teacher}}
        alone = run_recipe(recipe(f"wp-alone-{seed}", seed, args.limit, lm=wp,
                                  distill={"losses": [{"name": "lm_ce"}]}), runs, quiet=True)
        rows.setdefault("student alone (WordPiece, 1x32)", []).append(
            alone.results["models"]["alone"]["bits_per_char"])
        for name, losses in CROSS.items():
            result = run_recipe(recipe(f"wp-{name.split()[0]}-{seed}", seed, args.limit, lm=wp,
                                       distill={"losses": losses, "baseline": False}, cache={"topk": 32}),
                                runs, quiet=True)
            rows.setdefault(f"student {name} (WordPiece from the BPE teacher)", []).append(
                result.results["models"]["student"]["bits_per_char"])
        print(json.dumps({k: v[-1] for k, v in rows.items()}, indent=1), flush=True)
    write(rows, extra, args)


def write(rows: dict[str, list[float]], extra: dict, args) -> None:
    lines = ["# Causal-LM distillation (benchmarks/lm.py)", "",
             f"Rotten Tomatoes lines ({args.limit} snippets; 70/10/20 split), GPT-2-style models built from a config, "
             f"{args.seeds} seed(s); a shared 2-core CPU with one torch thread (other engineers' jobs ran beside it, "
             "so times are noisy). Held-out bits per character: lower is better, comparable across tokenizers.", "",
             "| model | bits/char (median) | per seed |", "|---|---:|---|"]
    for name, values in rows.items():
        lines.append(f"| {name} | {statistics.median(values):.4f} | {', '.join(f'{v:.4f}' for v in values)} |")
    cache = extra["cache-0"]
    live = extra["fkl"][0]["distill_s"]
    cached = extra["fkl, cache top-32"][0]["distill_s"]
    lines += ["", f"Teacher cache (top-32, fp16 log-probabilities, uint16 ids, rest mass, character spans): "
              f"{cache['bytes'] / 1e6:.2f} MB, {cache['bytes_per_token']:.0f} bytes per position "
              "(DistillKit's recommended setting is about 300 B/token), built in "
              f"{cache['cache_s']:.1f} s; distill stage with the live teacher {live:.1f} s vs from the cache "
              f"{cached:.1f} s ({BASE['train']['epochs']} epochs)."]
    out = Path(__file__).parent / "results" / "lm.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(out.read_text())


if __name__ == "__main__":
    main()
