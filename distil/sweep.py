"""Hyper-parameter sweeps with Optuna: each trial is a normal run with `--set` overrides; trials run in processes.

`distil sweep RECIPE --param distill.losses.1.temperature=1,2,4,8 --param distill.losses.1.weight=0.5:0.95`
keeps its study in `runs/<sweep>/optuna.db` (SQLite: run the same command again to continue it), its trials'
run folders in `runs/<sweep>/trials/`, and writes `sweep.md` (every trial, best first) and `sweep.png`.
The objective is the distilled student's accuracy on the validation split (the test split is only reported,
so choosing settings never looks at it).
"""

from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import yaml

from distil.checkpoint import atomic_write_text, load_model, write_atomically
from distil.engine import predict, targets_of
from distil.errors import DistilError
from distil.extras import available, require
from distil.pipeline import Run
from distil.recipe import Recipe, load_recipe, parse_override

OBJECTIVE = "val_acc"


@dataclass(frozen=True)
class SearchParam:
    """One searched recipe field: a list of choices, or a numeric range (uniform or log-uniform)."""

    key: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False

    def distribution(self):
        """The Optuna distribution of this parameter."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.choices is not None:
            return CategoricalDistribution(self.choices)
        if self.integer:
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(float(self.low), float(self.high), log=self.log)


def _scalar(text: str, where: str) -> Any:
    value = parse_override(f"x={text}")[1]
    if value is not None and not isinstance(value, bool | int | float | str):
        raise DistilError(f"--param {where}: '{text}' is not a single value; give numbers or words.")
    return value


def parse_param(text: str) -> SearchParam:
    """`KEY=a,b,c` (choices), `KEY=LOW:HIGH` (a uniform range; integers when both ends are) or `KEY=LOW:HIGH:log`."""
    if "=" not in text:
        raise DistilError(f"--param {text!r}: expected KEY=a,b,c or KEY=LOW:HIGH, e.g. train.lr=0.001,0.003.")
    keys, _ = parse_override(text)
    key, raw = ".".join(keys), text.split("=", 1)[1].strip()
    parts = raw.split(":")
    if len(parts) in (2, 3) and "," not in raw:
        low, high = (_scalar(p, text) for p in parts[:2])
        scale = parts[2].strip() if len(parts) == 3 else "uniform"
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)) or low >= high \
                or scale not in {"uniform", "log"} or (scale == "log" and low <= 0):
            raise DistilError(f"--param {text!r}: a range is LOW:HIGH or LOW:HIGH:log with numbers LOW < HIGH "
                              "(LOW > 0 for log), e.g. distill.losses.1.weight=0.5:0.95.")
        return SearchParam(key, low=low, high=high, log=scale == "log",
                           integer=isinstance(low, int) and isinstance(high, int))
    choices = tuple(_scalar(p.strip(), text) for p in raw.split(",") if p.strip())
    if not choices:
        raise DistilError(f"--param {text!r}: give choices a,b,c or a range LOW:HIGH, e.g. train.lr=0.001,0.003.")
    return SearchParam(key, choices=tuple(dict.fromkeys(choices)))


def _override(key: str, value: Any) -> str:
    return f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"


def run_trial(recipe_path: Path | None, overrides: list[str], runs_dir: Path, threads: int = 0) -> dict:
    """One trial: a whole run of the recipe with `overrides`; returns the student's val and test accuracy."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    run = Run(load_recipe(recipe_path, overrides), runs_dir, overwrite=True, quiet=True)
    result = run.execute()
    student = load_model(run.model_path("student"), trust_code=run.trusted_code)[0].to(run.device)
    logits = predict(student, run.splits.val, run.device)
    val_acc = (logits.argmax(-1) == targets_of(run.splits.val)).float().mean().item()
    return {OBJECTIVE: val_acc, "test_top1": result.results["models"]["student"]["top1"], "run_dir": str(run.dir)}


class Sweep:
    """An Optuna study over recipe fields, stored in `<runs_dir>/<name>/optuna.db` so it can be continued."""

    def __init__(self, recipe_path: Path | None, params: list[str], *, overrides: list[str] | None = None,
                 runs_dir: Path | str = "runs", name: str | None = None, jobs: int = 1, quiet: bool = False) -> None:
        if not params:
            raise DistilError("sweep: give at least one --param KEY=a,b,c or KEY=LOW:HIGH to search.")
        self.recipe_path = recipe_path
        self.overrides = list(overrides or [])
        self.params = [parse_param(p) for p in params]
        base = load_recipe(recipe_path, self.overrides)
        self._check(base)
        self.base = base
        self.name = name or f"{base.name}-sweep"
        if not self.name or any(c in self.name for c in "/\\") or self.name in {".", ".."}:
            raise DistilError(f"--name: '{self.name}' must be a plain folder name (no slashes).")
        self.folder = Path(runs_dir) / self.name
        cores = os.cpu_count() or 1
        if jobs < 1:
            raise DistilError(f"--jobs: {jobs} must be at least 1.")
        self.jobs = min(jobs, cores)
        self.threads = max(1, cores // self.jobs)
        self.quiet = quiet

    def _check(self, base: Recipe) -> None:
        if base.data.val_fraction <= 0:
            raise DistilError("sweep: the objective is the student's validation accuracy; set data.val_fraction > 0.")
        for p in self.params:  # fail now, naming the parameter, rather than in every trial
            value = p.choices[0] if p.choices is not None else p.low
            load_recipe(self.recipe_path, [*self.overrides, _override(p.key, value)])

    def study(self):
        """The Optuna study (created, or loaded to continue it), maximizing the validation accuracy."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.folder.mkdir(parents=True, exist_ok=True)
        storage = optuna.storages.RDBStorage(f"sqlite:///{(self.folder / 'optuna.db').resolve()}",
                                             engine_kwargs={"connect_args": {"timeout": 60}})
        sampler = optuna.samplers.TPESampler(seed=self.base.seed, constant_liar=True, n_startup_trials=5)
        return optuna.create_study(study_name=self.name, storage=storage, direction="maximize", sampler=sampler,
                                   load_if_exists=True)

    def run(self, trials: int) -> dict:
        """Run trials until `trials` have finished in this study (earlier runs count), then write the report."""
        from optuna.trial import TrialState

        study = self.study()
        for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(stale.number, state=TrialState.FAIL)  # its process died: an earlier, interrupted sweep
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        todo = max(0, trials - done)
        space = {p.key: p.distribution() for p in self.params}
        errors: list[str] = []
        if todo:
            pool = ProcessPoolExecutor(self.jobs, mp_context=get_context("spawn")) if self.jobs > 1 else None
            try:
                self._run_trials(study, space, todo, pool, errors)
            finally:
                if pool is not None:
                    pool.shutdown(cancel_futures=True)
        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            raise DistilError(f"sweep: no trial finished; the first error: {errors[0] if errors else 'none ran'}")
        return write_sweep_report(self.folder, study, self.params)

    def _run_trials(self, study, space: dict, todo: int, pool: ProcessPoolExecutor | None, errors: list[str]) -> None:
        from optuna.trial import TrialState

        running: dict[Future, Any] = {}
        started = 0
        while started < todo or running:
            while started < todo and len(running) < self.jobs:
                trial = study.ask(space)
                overrides = [*self.overrides, *(_override(k, v) for k, v in trial.params.items()),
                             f"name={self.base.name}-t{trial.number:03d}"]
                args = (self.recipe_path, overrides, self.folder / "trials", self.threads if pool else 0)
                running[pool.submit(run_trial, *args) if pool else _now(run_trial, *args)] = trial
                started += 1
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                trial = running.pop(future)
                try:
                    out = future.result()
                except DistilError as exc:
                    errors.append(str(exc))
                    study.tell(trial, state=TrialState.FAIL)
                    self._say(f"trial {trial.number}: failed: {exc}")
                    continue
                trial.set_user_attr("test_top1", out["test_top1"])
                trial.set_user_attr("run_dir", out["run_dir"])
                study.tell(trial, out[OBJECTIVE])
                self._say(f"trial {trial.number}: val acc {out[OBJECTIVE]:.4f}  {trial.params}")

    def _say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)


def _now(fn, *args) -> Future:
    """A finished Future: the trial run in this process (--jobs 1)."""
    future: Future = Future()
    try:
        future.set_result(fn(*args))
    except DistilError as exc:
        future.set_exception(exc)
    return future


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_sweep_report(folder: Path, study, params: list[SearchParam]) -> dict:
    """Write sweep.md (every finished trial, best first) and sweep.png; return the best trial's summary."""
    from optuna.trial import TrialState

    trials = sorted(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: (-t.value, t.number))
    keys = [p.key for p in params]
    best = trials[0]
    lines = [f"# sweep `{study.study_name}`", "",
             f"{len(trials)} finished trials; objective: the distilled student's validation accuracy "
             "(test top-1 is shown, never used to choose).", "",
             "Best settings: " + ", ".join(f"`{k}={_value(best.params[k])}`" for k in keys)
             + f" (val acc {best.value:.4f}, trial {best.number}).", "",
             "| rank | trial | " + " | ".join(f"`{k}`" for k in keys) + " | val acc | test top-1 | run |",
             "|---:|---:|" + "---:|" * len(keys) + "---:|---:|---|"]
    for i, t in enumerate(trials, 1):
        run_name = Path(t.user_attrs.get("run_dir", "")).name
        cells = [str(i), str(t.number), *(_value(t.params[k]) for k in keys), f"{t.value:.4f}",
                 f"{t.user_attrs.get('test_top1', float('nan')):.4f}", f"`{run_name}`"]
        lines.append("| " + " | ".join(cells) + " |")
    if available("matplotlib"):
        lines += ["", "![validation accuracy against each searched setting](sweep.png)", ""]
        write_atomically(folder / "sweep.png", lambda f: f.write(plot_sweep(trials, keys)))
    else:
        lines += ["", "The plot needs matplotlib: `pip install 'distil[report]'`.", ""]
    atomic_write_text(folder / "sweep.md", "\n".join(lines))
    return {"name": study.study_name, "trials": len(trials), "best_value": best.value, "best_params": best.params,
            "best_trial": best.number, "report": str(folder / "sweep.md")}


def plot_sweep(trials: list, keys: list[str]) -> bytes:
    """PNG: validation accuracy against each searched setting (best trial marked) and the best-so-far curve."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys) + 1, figsize=(3.6 * (len(keys) + 1), 3), squeeze=False)
    best = trials[0]
    for ax, key in zip(axes[0], keys):
        values = [t.params[key] for t in trials]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        labels = sorted({str(v) for v in values}) if not numeric else []
        xs = values if numeric else [labels.index(str(v)) for v in values]
        best_x = best.params[key] if numeric else labels.index(str(best.params[key]))
        ax.scatter(xs, [t.value for t in trials], color="#4c72b0", s=25)
        ax.scatter([best_x], [best.value], color="#dd8452", s=90, marker="*", label="best")
        if labels:
            ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel(key, fontsize=8)
        ax.set_ylabel("val acc")
        ax.legend(fontsize=7)
    ordered = sorted(trials, key=lambda t: t.number)
    running_best = [max(t.value for t in ordered[:i + 1]) for i in range(len(ordered))]
    ax = axes[0][-1]
    ax.step([t.number for t in ordered], running_best, where="post", color="#dd8452")
    ax.scatter([t.number for t in ordered], [t.value for t in ordered], color="#4c72b0", s=15)
    ax.set_xlabel("trial")
    ax.set_title("best so far", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


def run_sweep(recipe_path: Path | None, params: list[str], *, trials: int = 20, jobs: int = 1,
              overrides: list[str] | None = None, runs_dir: Path | str = "runs", name: str | None = None,
              quiet: bool = False) -> dict:
    """Search `params` over `trials` runs of the recipe (continuing a stored study of the same name)."""
    if trials < 1:
        raise DistilError(f"--trials: {trials} must be at least 1.")
    require("optuna", "sweep", "distil sweep")
    return Sweep(recipe_path, params, overrides=overrides, runs_dir=runs_dir, name=name, jobs=jobs,
                 quiet=quiet).run(trials)
