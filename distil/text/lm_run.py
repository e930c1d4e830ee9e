"""A recipe's causal-LM run (`lm:` section): teach (or load) a causal LM, cache its top-k tokens, distill a smaller
one (same tokenizer, or another through character alignment), train the same student alone, evaluate and report.

Each finished model is a Hugging Face folder in `runs/<name>/models/`; a resumed run skips it. The losses come from
`distill.losses` (`ce` is the student's own next-token loss, `kd` the forward KL at its temperature).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from distil import checkpoint
from distil.cache import CacheBuilder, TeacherCache, fingerprint, open_cache, read_layout
from distil.engine import Fit, resolve_device, seed_everything
from distil.errors import DistilError
from distil.methods.base import method_class
from distil.methods.objective import Objective
from distil.recipe import LossTerm, Recipe
from distil.run_folder import prepare_run_folder
from distil.runlog import MetricsLog
from distil.teachers import LiveTeacher, TeacherSource
from distil.text.align import cached_alignment, live_alignment, vocab_map
from distil.text.causal import (
    CROSS_TOKENIZER_LOSSES,
    CausalLM,
    OnPolicyFit,
    load_causal_lm,
    reconcile_vocab,
    same_tokenizer,
    token_cache_settings,
)
from distil.text.lm_build import build_causal_lm, load_saved, resolve_tokenizer, save_causal_lm
from distil.text.lm_corpus import Corpus, load_corpus
from distil.text.lm_eval import generation_speed, score_lm, size_of
from distil.text.lm_losses import GOLD
from distil.text.lm_report import render_lm_table, write_lm_report
from distil.text.tokenize import (
    TextDataset,
    load_tokenizer,
    tokenizer_difference,
    tokenizer_identity,
    tokenizer_tokens,
)

log = logging.getLogger("distil")
RENAMED = {"ce": "lm_ce", "kd": "fkl"}  # classification terms and their token-level equivalents
ROLES = {"teacher": "teacher", "student": "student (distilled)", "alone": "student (alone)"}


@dataclass
class LMRunResult:
    """Where the run wrote and what it measured; `text` is the table the CLI prints."""

    run_dir: Path
    results: dict
    text: str


def lm_terms(recipe: Recipe) -> list[LossTerm]:
    """distill.losses with ce / kd read as their token-level equivalents (lm_ce / fkl)."""
    return [term.model_copy(update={"name": RENAMED.get(term.name, term.name)}) for term in recipe.distill.losses]


class LMRun:
    """The stages of a causal-LM recipe in its run folder."""

    def __init__(self, recipe: Recipe, runs_dir: Path | str = "runs", *, resume: bool = False,
                 overwrite: bool = False, quiet: bool = False) -> None:
        self.recipe, self.lm = recipe, recipe.lm
        self.dir = Path(runs_dir) / recipe.name
        self.resume, self.quiet = resume, quiet
        self.device = resolve_device(recipe.device)
        prepare_run_folder(self.dir, self.recipe, resume=self.resume, overwrite=overwrite)
        self.log = MetricsLog(self.dir / "metrics.jsonl")
        self.timings: dict[str, float] = {}
        self.teacher_tok = self._teacher_tokenizer()
        self.student_tok = self._tokenizer(self.lm.student_tokenizer, "lm.student_tokenizer") \
            if self.lm.student_tokenizer else self.teacher_tok
        self.cross = tokenizer_tokens(self.teacher_tok) != tokenizer_tokens(self.student_tok)
        tokenizers = [self.teacher_tok, self.student_tok] if self.cross else [self.teacher_tok]
        self.corpus: Corpus = load_corpus(recipe.data, self.lm, tokenizers)
        self.data = {role: {split: s.dataset(tok, self.lm.max_length) for split, s in self.corpus.splits.items()}
                     for role, tok in (("teacher", self.teacher_tok), ("student", self.student_tok))}
        self._check_terms()

    def _tokenizer(self, spec: str, field: str):
        texts = self._train_texts() if spec == "bpe" else []
        return resolve_tokenizer(spec, field, self.dir, texts, self.lm.bpe_vocab)

    def _teacher_tokenizer(self):
        if self.lm.teacher.folder:  # a saved teacher brings its tokenizer
            return load_tokenizer(Path(self.lm.teacher.folder), field="lm.teacher.folder")
        return self._tokenizer(self.lm.tokenizer, "lm.tokenizer")

    def _train_texts(self) -> list[str]:
        """The training split's lines (what a BPE learns from), before any tokenizer exists."""
        lm = self.lm.model_copy(update={"prompt": None, "packing": False})
        return load_corpus(self.recipe.data, lm, []).splits["train"].texts

    def _check_terms(self) -> None:
        names = [t.name for t in lm_terms(self.recipe)]
        teacher_terms = [n for n in names if method_class(n).needs_teacher]
        if self.cross and any(n not in CROSS_TOKENIZER_LOSSES for n in teacher_terms):
            t, s = tokenizer_identity(self.teacher_tok), tokenizer_identity(self.student_tok)
            how = tokenizer_difference(self.teacher_tok, self.student_tok)
            raise DistilError(f"distill.losses: the teacher's tokenizer ({t}) and the student's ({s}) differ "
                              f"({how}), and {[n for n in teacher_terms if n not in CROSS_TOKENIZER_LOSSES]} compares "
                              "distributions over one vocabulary; use uld or gold (with ce), or give the student "
                              "the teacher's tokenizer (drop lm.student_tokenizer).")
        if self.lm.on_policy and (self.cross or self.recipe.cache is not None):
            raise DistilError("lm.on_policy: the student's own samples need the live teacher on the student's "
                              "tokenizer; drop the cache section and lm.student_tokenizer, or set on_policy: 0.")

    # --- stages -----------------------------------------------------------------------------------------------
    def _folder(self, role: str) -> Path:
        return self.dir / "models" / role

    def _fit(self, stage: str, model: CausalLM, objective: Objective, train: TextDataset, *,
             teacher: TeacherSource | None = None, epochs: int | None = None, lr=None, on_policy: float = 0.0) -> None:
        seed_everything(self.recipe.seed)
        common = dict(stage=stage, model=model, objective=objective, train=train, val=None, cfg=self.recipe.train,
                      device=self.device, seed=self.recipe.seed, teacher=teacher, epochs=epochs, lr=lr,
                      checkpoint_path=self.dir / "checkpoints" / f"{stage}.ckpt", log=self.log, quiet=self.quiet)
        fit = OnPolicyFit(**common, on_policy=on_policy, prompt_tokens=self.lm.prompt_tokens) if on_policy \
            else Fit(**common)
        if not self.resume:
            self.log.drop_stage(stage)
        started = time.perf_counter()
        fit.run(resume=self.resume)
        self.timings[stage] = time.perf_counter() - started

    def teach(self) -> CausalLM:
        """The teacher: a saved folder (loaded), this run's finished one (resume), or built and trained."""
        if self.lm.teacher.folder:
            return load_causal_lm(self.lm.teacher.folder).to(self.device)
        folder = self._folder("teacher")
        if self.resume and folder.is_dir():
            return load_saved(folder).to(self.device)
        t = self.recipe.teacher
        model = build_causal_lm(self.lm.teacher, self.teacher_tok, self.lm.max_length, self.recipe.seed)
        self._fit("teach", model, Objective([method_class("lm_ce")()]), self.data["teacher"]["train"],
                  epochs=t.epochs, lr=t.lr)
        save_causal_lm(model, folder)
        return model

    def cache(self, teacher: CausalLM) -> TeacherCache:
        """The teacher's top-k tokens (and their character spans) over the training split, in distil.cache."""
        c = self.recipe.cache
        folder = self.cache_folder
        data = self.data["teacher"]["train"]
        identity = tokenizer_identity(self.teacher_tok)
        expected = fingerprint(teacher, data, token_cache_settings(teacher, c))
        if c.path and (layout := read_layout(folder)) is not None and layout.fingerprint != expected:
            return open_cache(folder, expected, tokenizer=identity, topk=c.topk)  # never overwritten: refused
        started = time.perf_counter()
        CacheBuilder(folder, LiveTeacher(teacher), data, c, views=1, fingerprint=expected, device=self.device,
                     quiet=self.quiet, tokenizer=identity).build()
        self.timings["cache"] = time.perf_counter() - started
        return open_cache(folder, expected, verify=False, tokenizer=identity, topk=c.topk)

    @property
    def cache_folder(self) -> Path:
        """Where the teacher's token cache lives: cache.path (shared between runs), else the run's cache/."""
        path = self.recipe.cache.path if self.recipe.cache is not None else None
        return Path(path) if path else self.dir / "cache"

    def _student(self) -> CausalLM:
        return build_causal_lm(self.lm.student, self.student_tok, self.lm.max_length, self.recipe.seed + 1)

    def distill(self, teacher: CausalLM) -> CausalLM:
        """The student against the teacher's tokens (live, cached, or aligned from another tokenizer) + its labels."""
        folder = self._folder("student")
        if self.resume and folder.is_dir():
            return load_saved(folder, teacher.vocab_limit if not self.cross else None).to(self.device)
        student = self._student()
        cache = self.cache(teacher) if self.recipe.cache is not None else None
        train = self.data["student"]["train"]
        if self.cross:
            source: TeacherSource = cached_alignment(train, cache) if cache is not None else \
                live_alignment(train, teacher, self.data["teacher"]["train"])
        else:
            reconcile_vocab(teacher, student)
            source = cache if cache is not None else LiveTeacher(teacher)
        objective = Objective([method_class(t.name)(weight=t.weight, ratio=t.ratio, **t.params)
                               for t in lm_terms(self.recipe)])
        for term in objective.methods:
            if isinstance(term, GOLD):
                term.set_vocab_map(*vocab_map(self.teacher_tok, self.student_tok))
        self._fit("distill", student, objective, train, teacher=source, epochs=self.recipe.distill.epochs,
                  on_policy=self.lm.on_policy)
        save_causal_lm(student, folder)
        return student

    def alone(self) -> CausalLM:
        """The same student on its own next-token loss: the baseline distillation must beat."""
        folder = self._folder("alone")
        if self.resume and folder.is_dir():
            return load_saved(folder).to(self.device)
        student = self._student()
        self._fit("alone", student, Objective([method_class("lm_ce")()]), self.data["student"]["train"],
                  epochs=self.recipe.distill.epochs)
        save_causal_lm(student, folder)
        return student

    def evaluate(self, models: dict[str, CausalLM]) -> dict:
        """Held-out scores, generation speed and size of every model, each on its own tokenization of the test
        split; agreement with the teacher's top-1 token where the tokenizer is the teacher's."""
        out = {}
        teacher = models["teacher"]
        for role, model in models.items():
            own = "teacher" if role == "teacher" else "student"
            test = self.data[own]["test"]
            judge = teacher if role != "teacher" and same_tokenizer(teacher, model) else None
            metrics = score_lm(model, test, self.device, teacher=judge)
            metrics["tokens_per_s"] = generation_speed(model, test, self.device, self.lm.generate_tokens)
            metrics.update(size_of(model))
            metrics["tokenizer"] = tokenizer_identity(model.tokenizer)
            out[role] = {"label": ROLES[role], **metrics}
            self.log.write({"stage": "evaluate", "model": role, **metrics})
        return out

    def execute(self) -> LMRunResult:
        """Every stage in order; results.json and report.md."""
        teacher = self.teach().eval()
        models: dict[str, nn.Module] = {"teacher": teacher, "student": self.distill(teacher)}
        if self.recipe.distill.baseline:
            models["alone"] = self.alone()
        results = {"name": self.recipe.name, "kind": "lm", "dataset": self.recipe.data.name,
                   "device": str(self.device), "models": self.evaluate(models), "timings_s": self.timings,
                   "corpus": {split: len(s.texts) for split, s in self.corpus.splits.items()}
                   | {"empty_lines_dropped": self.corpus.empty_lines, "long_lines_cut": self.corpus.cut_lines,
                      "student_truncated": self.corpus.splits["train"].overflow(self.student_tok, self.lm.max_length)
                      if self.cross else 0},
                   "losses": [t.model_dump() for t in lm_terms(self.recipe)]}
        if self.recipe.cache is not None and (layout := read_layout(self.cache_folder)) is not None:
            results["cache"] = cache_summary(self.cache_folder, layout) | {"aligned": self.cross}
        checkpoint.atomic_write_text(self.dir / "results.json", json.dumps(results, indent=1))
        self.log.close()
        write_lm_report(self.dir, results)
        return LMRunResult(self.dir, results, render_lm_table(results))


def cache_summary(folder: Path, layout) -> dict:
    """Bytes on disk and bytes per stored position of a token cache."""
    size = sum(f.stat().st_size for f in folder.glob("*.npy"))
    positions = layout.rows * (layout.positions or 1)
    return {"folder": str(folder), "bytes": size, "bytes_per_token": size / max(1, positions), "topk": layout.topk,
            "tokenizer": layout.tokenizer}


def run_lm(recipe: Recipe, runs_dir: Path | str = "runs", *, resume: bool = False, overwrite: bool = False,
           quiet: bool = False) -> LMRunResult:
    """Run a causal-LM recipe in `runs_dir/<name>/`."""
    return LMRun(recipe, runs_dir, resume=resume, overwrite=overwrite, quiet=quiet).execute()
