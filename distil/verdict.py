"""The verdict over paired seeds: Δ = distilled − alone as a mean with its 95% t-interval, in one word."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from scipy import stats

from distil.errors import DistilError

GAIN, NONE, LOSS = "gain", "no detectable gain", "loss"


@dataclass(frozen=True)
class Verdict:
    """Paired differences (distilled − alone, one per seed), their mean and 95% t-interval, and the word it earns:
    "gain" when the interval lies wholly on the better side of 0, "loss" when wholly on the worse side, otherwise
    "no detectable gain" (always so for one seed: one difference has no interval)."""

    deltas: tuple[float, ...]
    mean: float
    low: float
    high: float
    word: str
    higher_is_better: bool = True
    confidence: float = 0.95

    @property
    def seeds(self) -> int:
        """How many paired seeds the verdict rests on."""
        return len(self.deltas)

    @property
    def half_width(self) -> float:
        """Half the interval's width (inf for one seed)."""
        return (self.high - self.low) / 2

    def line(self, what: str = "top-1", scale: float = 100.0, unit: str = " points") -> str:
        """One sentence, e.g. 'Δ top-1 distilled − alone over 3 seeds: +1.20 ± 0.45 points (95% CI +0.75..+1.65): gain'.
        """
        m = self.mean * scale
        if self.seeds < 2:
            spread = "(one seed: no interval; use --seeds 3)"
            return f"Δ {what} distilled − alone over 1 seed: {m:+.2f}{unit} {spread}: {self.word}"
        h, lo, hi = self.half_width * scale, self.low * scale, self.high * scale
        level = f"{self.confidence * 100:g}%"
        return (f"Δ {what} distilled − alone over {self.seeds} seeds: {m:+.2f} ± {h:.2f}{unit} "
                f"({level} CI {lo:+.2f}..{hi:+.2f}): {self.word}")

    def to_dict(self) -> dict:
        """A JSON-ready record (metrics.jsonl, results.json); an infinite bound is written as None."""
        out = asdict(self)
        out["deltas"] = list(self.deltas)
        for key in ("low", "high"):
            if not math.isfinite(out[key]):
                out[key] = None
        out["seeds"] = self.seeds
        return out


    @classmethod
    def from_dict(cls, record: dict) -> Verdict:
        """The verdict `to_dict` wrote (a None bound is infinite)."""
        low = -math.inf if record["low"] is None else record["low"]
        high = math.inf if record["high"] is None else record["high"]
        return cls(tuple(record["deltas"]), record["mean"], low, high, record["word"],
                   record.get("higher_is_better", True), record.get("confidence", 0.95))


def paired_verdict(distilled: Sequence[float], alone: Sequence[float], higher_is_better: bool = True,
                   confidence: float = 0.95) -> Verdict:
    """The verdict on `distilled` vs `alone`, the same metric of the two students paired seed for seed.

    `higher_is_better=False` for a metric to lower (a loss, perplexity): then a negative Δ is the gain.
    """
    if len(distilled) != len(alone):
        raise DistilError(f"paired verdict: {len(distilled)} distilled scores but {len(alone)} alone scores; give "
                          "one of each per seed.")
    if not distilled:
        raise DistilError("paired verdict: no scores; give at least one seed of each student.")
    if not 0 < confidence < 1:
        raise DistilError(f"paired verdict: confidence {confidence} is not between 0 and 1, e.g. 0.95.")
    deltas = tuple(float(d) - float(a) for d, a in zip(distilled, alone))
    n = len(deltas)
    mean = sum(deltas) / n
    if n < 2:
        low, high = -math.inf, math.inf
    else:
        sd = math.sqrt(sum((d - mean) ** 2 for d in deltas) / (n - 1))
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
        low, high = mean - half, mean + half
    better_low, better_high = (low, high) if higher_is_better else (-high, -low)
    word = GAIN if better_low > 0 else LOSS if better_high < 0 else NONE
    return Verdict(deltas, mean, low, high, word, higher_is_better, confidence)


def render_verdict(record: dict | None) -> list[str]:
    """Bullet lines of a run's verdict over paired seeds (distil.seeds): test top-1, then best and last epoch."""
    if not record:
        return []
    lines = [f"- **Verdict: {record['test']['word']}.** " + Verdict.from_dict(record["test"]).line("test top-1")]
    for when, what in (("val_best", "val top-1 at the best epoch"), ("val_last", "val top-1 at the last epoch")):
        if when in record:
            lines.append("- " + Verdict.from_dict(record[when]).line(what))
    seeds = ", ".join(str(s) for s in record["seeds"])
    shared = "; the teacher was trained once and shared" if record.get("teacher_shared") else ""
    per_seed = "; ".join(f"seed {r['seed']}: {r['student'] * 100:.2f} vs {r['alone'] * 100:.2f}"
                         for r in record["per_seed"])
    lines.append(f"- paired seeds {seeds} (same initialisation and data order per seed{shared}): "
                 f"distilled vs alone test top-1 {per_seed}")
    return lines
