"""The one training loop every stage and strategy uses: steps, precision, accumulation, checkpoints, resume."""

from __future__ import annotations

import copy
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from distil import calibrate, checkpoint, distributed
from distil.batch import Batch, iterate, num_batches
from distil.data.augment import view_of
from distil.distributed import resolve_device  # noqa: F401  (re-exported: its home is distil.distributed)
from distil.errors import DistilError
from distil.ledger import StepLedger, nonfinite
from distil.methods.base import Outputs
from distil.methods.objective import Objective
from distil.models import batchnorm
from distil.recipe import AugmentConfig, TrainConfig
from distil.runlog import MetricsLog
from distil.taps import Taps
from distil.teachers import TeacherSource, as_outputs


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so the same recipe and seed give the same run."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every RNG state a training step consumes (dropout, augmentation), for exact resume, as tensors and plain
    containers (a checkpoint is loaded with weights_only=True)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "gauss": float(gauss)}
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore the states `rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def make_optimizer(params: list[nn.Parameter], cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """SGD (Nesterov-free, with momentum) or AdamW over `params`, with PyTorch's fused kernels.

    Fused: one kernel per step instead of several per parameter, and it takes `found_inf`, so a non-finite step
    is skipped on the device without a host sync (train.max_bad_steps).
    """
    fused = True if params and params[0].device.type in ("cpu", "cuda") else None
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=fused)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay, fused=fused)


class Joint(torch.optim.Optimizer):
    """Several optimizers stepped as one; their param groups are this one's, so one scheduler moves them all."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        super().__init__([p for o in optimizers for g in o.param_groups for p in g["params"]], {})
        self.optimizers = optimizers
        self.param_groups = [g for o in optimizers for g in o.param_groups]

    def __setattr__(self, name: str, value) -> None:
        if name == "found_inf":  # the loop's skip flag for fused optimizers reaches each of them
            for optimizer in self.optimizers:
                optimizer.found_inf = value
        super().__setattr__(name, value)

    def step(self, closure=None) -> None:
        """Step every optimizer."""
        for optimizer in self.optimizers:
            optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every optimizer's gradients."""
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        """Each optimizer's state, in order."""
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what state_dict gave."""
        for optimizer, state in zip(self.optimizers, state_dict["optimizers"]):
            optimizer.load_state_dict(state)


def stage_optimizer(params: list[nn.Parameter], sgd_params: list[nn.Parameter], cfg: TrainConfig,
                    lr: float) -> torch.optim.Optimizer:
    """The stage's optimizer; parameters a term wants trained by plain SGD (CTKD's temperature) get an SGD of their
    own at the same lr when the stage uses AdamW."""
    own = {id(p) for p in sgd_params}
    if cfg.optimizer == "sgd" or not own:
        return make_optimizer(params, cfg, lr)
    sgd = cfg.model_copy(update={"optimizer": "sgd", "weight_decay": 0.0})
    return Joint([make_optimizer([p for p in params if id(p) not in own], cfg, lr),
                  make_optimizer([p for p in params if id(p) in own], sgd, lr)])


def lr_factor(cfg: TrainConfig, steps_per_epoch: int, epochs: int) -> Callable[[int], float]:
    """LR multiplier per optimizer step: linear warm-up, then cosine, step decay or constant."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    total = max(1, epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.scheduler == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if cfg.scheduler == "step":
            epoch = step // steps_per_epoch
            return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
        return 1.0

    return factor


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 512) -> torch.Tensor:
    """Logits of `model` on every sample of `dataset`, in order, on the CPU."""
    was_training = model.training
    model.eval()
    chunks = [as_outputs(model(b.x.to(device))).logits.float().cpu()
              for b in iterate(dataset, batch_size, shuffle=False)]
    model.train(was_training)
    return torch.cat(chunks) if chunks else torch.empty(0)


def targets_of(dataset: Dataset) -> torch.Tensor:
    """All targets of `dataset`, in order."""
    return torch.cat([b.y for b in iterate(dataset, 4096, shuffle=False)])


@dataclass
class FitResult:
    """What a training stage produced: the trained model and one record per epoch."""

    model: nn.Module
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    lr: float | None = None
    lr_find: calibrate.RangeTest | None = None
    balance: calibrate.Balance | None = None


@dataclass
class Fit:
    """One training stage: a model learning `objective` on `train`, validated on `val`.

    Hooks for strategies: before every step the engine calls `set_progress(p)` on each module of the objective
    that has one, p in [0, 1) being how far through the stage the step is (schedules move loss weights and
    temperatures with it); `batch_transform(batch, model)`, when given, replaces each training batch after
    `prepare_batch` and before the teacher sees it (mixup, cutmix, adversarial samples of the model).
    """

    stage: str
    model: nn.Module
    objective: Objective
    train: Dataset
    val: Dataset | None
    cfg: TrainConfig
    device: torch.device
    seed: int = 0
    teacher: TeacherSource | None = None
    epochs: int | None = None
    lr: float | str | None = None
    checkpoint_path: Path | None = None
    log: MetricsLog | None = None
    quiet: bool = False
    augment: AugmentConfig | None = None
    batch_transform: Callable[[Batch, nn.Module], Batch] | None = None

    def prepare_batch(self, batch: Batch, epoch: int) -> Batch:
        """Move a batch to the device and, with augmentation, replace it by this epoch's view of its samples."""
        if self.augment is None or not self.augment.active:
            return batch if batch.y.device == self.device else batch.to(self.device)
        return view_of(batch.to(self.device), epoch % self.augment.views, self.augment, self.seed)

    def run(self, resume: bool = False) -> FitResult:
        """Train for the configured epochs (continuing from the checkpoint when `resume`), return the model."""
        if self.objective.needs_teacher and self.teacher is None:
            raise DistilError(f"{self.stage}: the losses need a teacher but none was given.")
        if len(self.train) == 0:
            raise DistilError(f"{self.stage}: the training split is empty; use more data or smaller split fractions.")
        cfg, device = self.cfg, self.device
        has_val = self.val is not None and len(self.val) > 0
        stop_cfg = cfg.early_stopping
        if stop_cfg.patience and not has_val:
            raise DistilError("train.early_stopping.patience needs a validation split; set data.val_fraction > 0.")
        epochs = self.epochs or cfg.epochs
        for method in self.objective.leaves():  # terms that configure the models (e.g. ask for hidden states) do
            if hasattr(method, "attach"):       # it here, wrapped ones too, before their parameters join the optimizer
                method.attach(self.model, self.teacher)
        model, objective = self.model.to(device), self.objective.to(device)
        if device.type == "cuda" and _is_conv_net(model):
            model.to(memory_format=torch.channels_last)
        self._prepare_objective(model, objective)  # taps hooked, connectors built: before the optimizer sees them
        saved = self._load_checkpoint() if resume else None
        self._lr_find: calibrate.RangeTest | None = None
        self._balance: calibrate.Balance | None = None
        if saved is None:
            self._calibrate(model, objective)
            self._pretrain(model, objective)
        else:
            self._lr = saved["lr"]
            for method, weight in zip(objective.methods, saved["weights"]):
                if weight is not None:
                    method.weight = weight
        params = [p for p in list(model.parameters()) + list(objective.parameters()) if p.requires_grad]
        optimizer = stage_optimizer(params, objective.sgd_parameters(), cfg, self._lr)
        self._params = [p for g in optimizer.param_groups for p in g["params"]]
        self._distributed = distributed.is_distributed()
        self._objective_params = [p for p in objective.parameters() if p.requires_grad]
        steps_per_epoch = max(1, num_batches(self.train, cfg.batch_size) // cfg.accumulate)
        # a constant lr (no warm-up, no schedule) needs no scheduler, nor its wrapper around every optimizer step
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, steps_per_epoch, epochs)) \
            if _moving_lr(cfg) else None

        history: list[dict] = []
        start_epoch, best, best_state, bad_epochs = 0, None, None, 0
        self._bad_steps = torch.zeros((), device=device, dtype=torch.long)  # skipped non-finite steps, this stage
        if saved is not None:
            model.load_state_dict(saved["model"])
            objective.load_state_dict(saved["objective"])
            optimizer.load_state_dict(saved["optimizer"])
            if scheduler is not None and saved["scheduler"] is not None:
                scheduler.load_state_dict(saved["scheduler"])
            set_rng_state(saved["rng"])
            history, start_epoch = saved["history"], saved["epoch"]
            best, best_state, bad_epochs = saved["best"], saved["best_state"], saved["bad_epochs"]
            self._bad_steps.fill_(saved.get("bad_steps", 0))
            if self.log is not None:
                self.log.restore(self.stage, history)

        bar = self._progress_bar(start_epoch, epochs)
        stopped_early = False
        forward = distributed.wrap(model, device)  # DDP under torchrun: gradients averaged over ranks
        forward = torch.compile(forward) if cfg.compile else forward  # same parameters; the compiled graph runs steps
        for epoch in range(start_epoch, epochs):
            bar.set_description(f"{self.stage} {epoch + 1}/{epochs}")
            with self._hooks():  # the student's taps are hooked while it trains, not while it is validated
                record = self._train_epoch(epoch, model, forward, objective, optimizer, scheduler, bar)
            if has_val:
                record.update(self._validate(model))
            history.append(record)
            if stop_cfg.patience:
                score = record[stop_cfg.metric] * (1 if stop_cfg.metric == "val_acc" else -1)
                if best is None or score > best:
                    best, best_state, bad_epochs = score, copy.deepcopy(model.state_dict()), 0
                else:
                    bad_epochs += 1
            self._save_checkpoint(epoch + 1, model, objective, optimizer, scheduler, history, best, best_state,
                                  bad_epochs)
            if self.log is not None:
                self.log.write(record)
            bar.set_postfix({k: f"{record[k]:.3f}" for k in ("loss", "val_acc") if k in record})
            if stop_cfg.patience and bad_epochs >= stop_cfg.patience:
                stopped_early = True
                break
        bar.close()
        if best_state is not None:
            model.load_state_dict(best_state)
        self._recalibrate_batchnorm(model)
        for method in objective.leaves():
            if hasattr(method, "detach"):
                method.detach()
        model.eval()
        return FitResult(model, history, stopped_early, self._lr, self._lr_find, self._balance)

    def _recalibrate_batchnorm(self, model: nn.Module) -> None:
        """BatchNorm statistics recomputed for the final weights on training samples (distil.models.batchnorm): the
        running averages of a fast-moving model can leave it evaluating far below how it trains."""
        seen = batchnorm.recalibrate(model, self.train, self.device, batch_size=self.cfg.batch_size, seed=self.seed)
        if seen and self.log is not None:
            self.log.drop_stage(f"{self.stage}:bn_recalibrate")
            self.log.write({"stage": f"{self.stage}:bn_recalibrate", "samples": seen})

    @contextmanager
    def _fresh_batchnorm(self, model: nn.Module) -> Iterator[None]:
        """Inside: BatchNorm statistics recomputed for the current weights on batchnorm.VALIDATION_SAMPLES training
        samples, as the stage's end sets them, so a validation score (and early stopping on it) is not fooled by
        running averages that lag behind fast-moving weights. On the way out the running averages and every RNG are
        put back: training goes on exactly as it would without validation."""
        layers = batchnorm.batchnorm_layers(model)
        if not layers:
            yield
            return
        saved, rng = [copy.deepcopy(layer.state_dict()) for layer in layers], rng_state()
        try:
            batchnorm.recalibrate(model, self.train, self.device, batch_size=self.cfg.batch_size,
                                  samples=batchnorm.VALIDATION_SAMPLES, seed=self.seed)
            yield
        finally:
            for layer, state in zip(layers, saved):
                layer.load_state_dict(state)
            set_rng_state(rng)

    def _progress_bar(self, start_epoch: int, epochs: int) -> tqdm:
        """The stage's bar, in samples over all its epochs, advanced every step (samples/s and ETA from tqdm).

        None lets tqdm hide itself when stderr is not a terminal; --quiet, CI and ranks other than 0 hide it always.
        """
        hide = True if self.quiet or os.environ.get("CI") or not distributed.is_main() else None
        per_epoch = len(self.train)
        return tqdm(desc=self.stage, total=per_epoch * epochs, initial=per_epoch * start_epoch, disable=hide,
                    leave=True, unit="sample", unit_scale=True, dynamic_ncols=True)

    def _calibrate(self, model: nn.Module, objective: Objective) -> None:
        """Before training: the weights of `weight: auto` terms, then the lr when it is `auto` (a range test on the
        balanced objective); both on real batches, the model, objective and RNGs restored afterwards."""
        lr = self.lr or self.cfg.lr
        self._balance = self._balance_terms(model, objective)
        self._lr = self._range_test(model, objective) if lr == "auto" else float(lr)
        gradients = self._term_gradients(model, objective)
        if self.log is not None:
            self.log.drop_stage(f"{self.stage}:grad_norms")
            if gradients is not None:
                self.log.write({"stage": f"{self.stage}:grad_norms", **gradients})
            for name, done in (("balance", self._balance), ("lr_find", self._lr_find)):
                self.log.drop_stage(f"{self.stage}:{name}")
                if done is not None:
                    self.log.write(done.record(self.stage))

    @contextmanager
    def _rehearsal(self, model: nn.Module, objective: Objective) -> Iterator[None]:
        """Steps taken inside leave no trace: the model, the objective and every RNG are restored on the way out."""
        state = copy.deepcopy((model.state_dict(), objective.state_dict()))
        rng, was_training = rng_state(), model.training
        model.train()
        objective.train()
        try:
            with self._hooks():
                yield
        finally:
            model.load_state_dict(state[0])
            objective.load_state_dict(state[1])
            set_rng_state(rng)
            model.train(was_training)
            for p in list(model.parameters()) + list(objective.parameters()):
                p.grad = None

    def _calibration_batches(self, model: nn.Module, salt: int) -> Iterator[Batch]:
        """Endless shuffled, prepared (and transformed) training batches of a seeded order of their own."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + salt)
        for batch in calibrate.cycle(lambda _: iterate(self.train, self.cfg.batch_size, shuffle=True,
                                                       generator=generator)):
            batch = self.prepare_batch(batch, 0)
            yield self.batch_transform(batch, model) if self.batch_transform is not None else batch

    def _term_values(self, model: nn.Module, objective: Objective, batch: Batch) -> list[torch.Tensor]:
        """Each term's unweighted value on a batch, with its graph."""
        teacher_out = self.teacher.outputs(batch) if objective.needs_teacher else None
        student_out = self._student_outputs(model, batch)
        return [method(student_out, teacher_out, batch.y) for method in objective.methods]

    def _balance_terms(self, model: nn.Module, objective: Objective) -> calibrate.Balance | None:
        """Set the weights of the `weight: auto` terms from their gradient norms on the student (calibrate.balance)."""
        if all(getattr(m, "ratio", None) is None for m in objective.methods):
            return None
        listeners = [m for m in objective.modules() if callable(getattr(m, "set_progress", None))]
        for listener in listeners:  # warm-ups at full strength: a term still ramping up has no gradient yet
            listener.set_progress(1.0)
        with self._rehearsal(model, objective):
            batches = self._calibration_batches(model, 700_001)
            params = [p for p in model.parameters() if p.requires_grad]
            done = calibrate.balance(list(objective.methods), objective.term_names(),
                                     lambda _: self._term_values(model, objective, next(batches)), params)
        for listener in listeners:
            listener.set_progress(0.0)
        weights = distributed.broadcast_object([m.weight for m in objective.methods])
        for method, weight in zip(objective.methods, weights):
            method.weight = weight
        return done

    def _term_gradients(self, model: nn.Module, objective: Objective) -> dict[str, dict[str, float]] | None:
        """Each term's weighted gradient norm on the student at the start (mean of calibrate.BALANCE_BATCHES
        batches) and its stated weight, as {"weighted": ..., "weights": ...}, for distil.guards to name a term that
        swamps the others; None for a single-term objective."""
        if len(objective.methods) < 2 or type(objective).forward is not Objective.forward:
            return None  # a strategy's own objective (online peers) feeds its terms itself
        names = objective.term_names()
        weights = {name: abs(getattr(method, "weight", 1.0)) for name, method in zip(names, objective.methods)}
        sums = dict.fromkeys(names, 0.0)
        with self._rehearsal(model, objective):
            batches = self._calibration_batches(model, 800_001)
            params = [p for p in model.parameters() if p.requires_grad]
            for _ in range(calibrate.BALANCE_BATCHES):
                values = self._term_values(model, objective, next(batches))
                for name, value in zip(names, values):
                    sums[name] += weights[name] * calibrate.grad_norm(value, params) / calibrate.BALANCE_BATCHES
        return {"weighted": sums, "weights": weights}

    def _range_test(self, model: nn.Module, objective: Objective) -> float:
        """`lr: auto`: an lr range test on the student with the stage's objective (calibrate.range_test)."""
        low, high = calibrate.RANGE[self.cfg.optimizer]
        with self._rehearsal(model, objective):
            batches = self._calibration_batches(model, 900_001)
            params = [p for p in list(model.parameters()) + list(objective.parameters()) if p.requires_grad]
            optimizer = stage_optimizer(params, objective.sgd_parameters(), self.cfg, low)

            def loss_at(_: int) -> torch.Tensor:
                batch = next(batches)
                teacher_out = self.teacher.outputs(batch) if objective.needs_teacher else None
                return objective(self._student_outputs(model, batch), teacher_out, batch.y)[0]

            total = (self.epochs or self.cfg.epochs) * num_batches(self.train, self.cfg.batch_size)
            steps = min(calibrate.RANGE_STEPS, max(calibrate.MIN_RANGE_STEPS, total))  # never longer than the stage
            self._lr_find = calibrate.range_test(loss_at, optimizer, low, high, steps, grad_clip=self.cfg.grad_clip)
        return float(distributed.broadcast_object(self._lr_find.lr))

    def _train_epoch(self, epoch: int, model: nn.Module, forward: nn.Module, objective: Objective, optimizer,
                     scheduler, bar: tqdm) -> dict:
        """One pass over the training data; the record of its sums (one host sync per `train.log_every` steps)."""
        cfg, device = self.cfg, self.device
        model.train()
        objective.train()
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16) if cfg.precision == "bf16" \
            else nullcontext()
        start = time.perf_counter()
        steps = num_batches(self.train, cfg.batch_size)
        ledger = StepLedger(epoch * steps, device, self._bad_steps)
        optimizer.zero_grad(set_to_none=True)
        batches = iterate(self.train, cfg.batch_size, shuffle=True, generator=generator,
                          num_workers=cfg.num_workers, pin_memory=device.type == "cuda", shard=distributed.shard())
        listeners = [m for m in objective.modules() if callable(getattr(m, "set_progress", None))]
        teacher = self.teacher if objective.needs_teacher else None
        world = distributed.world_size()  # the bar counts every rank's samples
        for step, batch in enumerate(batches):
            if listeners:
                progress = (epoch * steps + step) / max(1, (self.epochs or cfg.epochs) * steps)
                for listener in listeners:
                    listener.set_progress(progress)
            batch = self.prepare_batch(batch, epoch)
            if self.batch_transform is not None:
                batch = self.batch_transform(batch, model)
            teacher_out = teacher.outputs(batch) if teacher is not None else None
            with autocast:
                student_out = self._student_outputs(forward, batch)
                loss, terms = objective(student_out, teacher_out, batch.y)
            (loss / cfg.accumulate if cfg.accumulate > 1 else loss).backward()
            value = loss.detach()
            bar.update(batch.y.shape[0] * world)
            stepped = (step + 1) % cfg.accumulate == 0 or step + 1 == steps
            if stepped:
                bad = self._optimizer_step(optimizer, value)
                if scheduler is not None:
                    scheduler.step()
            else:
                bad = nonfinite([value])  # stays on the device: no host sync per step
            ledger.add(value, terms, student_out.logits.argmax(-1), bad, batch.y, stepped)
            if (step + 1) % cfg.log_every == 0:
                self._check_finite(epoch, ledger)
        self._check_finite(epoch, ledger)
        self._bad_steps = ledger.bad_steps
        # one all-reduce per epoch: the record holds the sums over every rank's shard
        totals = distributed.all_reduce_sum(ledger.totals())
        seen_all, labeled_all, correct_all, loss_all, *term_all = totals.tolist()
        seen_all = seen_all or math.nan  # every step of the epoch skipped: no loss or accuracy to report
        labeled_all = labeled_all or math.nan  # accuracy over samples with a label (a transfer set's pool has none)
        record = {"stage": self.stage, "epoch": epoch + 1, "loss": loss_all / seen_all,
                  "train_acc": correct_all / labeled_all, "lr": optimizer.param_groups[0]["lr"],
                  "seconds": round(time.perf_counter() - start, 4)}
        record.update({f"loss_{k}": v / seen_all for k, v in zip(ledger.terms, term_all)})
        return record

    def _hooks(self) -> AbstractContextManager:
        """The student's taps as a context (hooks registered inside it only), or a no-op when no loss taps it."""
        return self._taps if self._taps is not None else nullcontext()

    def _student_outputs(self, forward: nn.Module, batch: Batch) -> Outputs:
        """The student's outputs for a batch: logits, the features its taps captured, and the sample indices."""
        out = as_outputs(forward(batch.x))
        features = {**out.features, **self._taps.pop()} if self._taps is not None else out.features
        return Outputs(out.logits, features, batch.index)

    def _prepare_objective(self, model: nn.Module, objective: Objective) -> None:
        """Check and hook the taps the losses read, then let terms build their parameters from one probe batch.

        The probe runs the student in eval mode without gradients, so BatchNorm statistics and the run stay as
        they would be without it; nothing runs when no term taps features or builds parameters.
        """
        taps = objective.student_taps()
        self._taps = Taps(model, taps, role="student", field="distill.losses") if taps else None
        if objective.teacher_taps() and hasattr(self.teacher, "tap"):  # a live teacher hooks them; a cache has them
            self.teacher.tap(objective.teacher_taps())
        if not objective.needs_probe:
            return
        batch = self.prepare_batch(next(iter(iterate(self.train, self.cfg.batch_size, shuffle=False))), 0)
        was_training = model.training
        model.eval()
        with torch.no_grad(), self._hooks():
            student_out = self._student_outputs(model, batch)
        model.train(was_training)
        teacher_out = self.teacher.outputs(batch) if objective.needs_teacher else None
        objective.prepare(student_out, teacher_out, num_samples=len(self.train))
        objective.to(self.device)

    def _pretrain(self, model: nn.Module, objective: Objective) -> None:
        """Run the stages terms need before distillation (FT's paraphraser, AB's initialisation), each logged as
        `<stage>:<term>`; on resume from a checkpoint they are over and their result is in the checkpoint."""
        for name, plan in objective.pretrainings(model):
            stage = f"{self.stage}:{name}"
            if self.log is not None:
                self.log.drop_stage(stage)
            flags = [p.requires_grad for p in plan.parameters]
            for p in plan.parameters:
                p.requires_grad_(True)
            optimizer = make_optimizer(plan.parameters, self.cfg, self._lr)
            model.train()
            objective.train()
            for epoch in range(plan.epochs):
                start, total, seen = time.perf_counter(), torch.zeros((), device=self.device), 0
                generator = torch.Generator().manual_seed(self.seed * 1_000_003 + 500_009 + epoch)
                with self._hooks():
                    for batch in iterate(self.train, self.cfg.batch_size, shuffle=True, generator=generator):
                        batch = self.prepare_batch(batch, epoch)
                        student_out = self._student_outputs(model, batch) if plan.needs_student else None
                        loss = plan.loss(student_out, self.teacher.outputs(batch), batch.y)
                        loss.backward()
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                        total += loss.detach().float() * len(batch.y)
                        seen += len(batch.y)
                record = {"stage": stage, "epoch": epoch + 1, "loss": total.item() / max(1, seen),
                          "seconds": round(time.perf_counter() - start, 4)}
                if not math.isfinite(record["loss"]):
                    raise DistilError(f"{stage}: the loss became NaN or infinite before distillation; lower train.lr.")
                if self.log is not None:
                    self.log.write(record)
            for p, flag in zip(plan.parameters, flags):
                p.requires_grad_(flag)

    def _optimizer_step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> torch.Tensor:
        """Clip and step; returns 1.0 when the loss or the gradients held a NaN/inf, else 0.0, as a device tensor.

        Without clipping the check is one fused kernel over the gradients and the loss (no norm is computed); with
        train.max_bad_steps > 0 the fused optimizer skips such a step on the device (its `found_inf`).
        """
        params = self._params
        if self._distributed:
            distributed.average_gradients(self._objective_params)
        grads = [p.grad for p in params if p.grad is not None]
        if self.cfg.grad_clip:
            norm = nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=self.device)
            nn.utils.clip_grads_with_norm_(params, self.cfg.grad_clip, norm)
            bad = (~torch.isfinite(norm + loss)).float()  # a NaN or inf in either makes the sum non-finite
        else:
            bad = nonfinite([*grads, loss])
        if self.cfg.max_bad_steps:
            optimizer.found_inf = bad
        optimizer.step()
        for p in params:  # zero_grad(set_to_none=True) without its profiler and compiler wrappers
            p.grad = None
        return bad

    def _check_finite(self, epoch: int, ledger: StepLedger) -> None:
        """Stop (a host sync, every train.log_every steps and at epoch end) when non-finite steps pass the limit."""
        ledger.flush()  # the stop comes in the epoch of the step that passes the limit: its ledger names the steps
        first = torch.where(ledger.first_bad >= 0, -ledger.first_bad, -(2**62))
        state = distributed.all_reduce_max(torch.stack([ledger.bad_steps, first, ledger.last_bad]))
        count, first_step, last_step = (int(v) for v in state.tolist())
        limit = self.cfg.max_bad_steps
        if last_step < 0 or (limit and count <= limit):
            return
        path = self.checkpoint_path
        kept = f"the last good checkpoint {path} is kept" if path else "nothing was saved"
        fix = "lower train.lr or set train.grad_clip"
        if not limit:
            raise DistilError(f"{self.stage}: the loss or its gradients became NaN or infinite at step {-first_step} "
                              f"(epoch {epoch + 1}); {kept}; {fix}.")
        raise DistilError(f"{self.stage}: {count} steps had a NaN or infinite loss or gradients, more than "
                          f"train.max_bad_steps={limit}; the last was step {last_step} (epoch {epoch + 1}); {kept}; "
                          f"{fix}, or raise train.max_bad_steps.")

    def _validate(self, model: nn.Module) -> dict:
        """Validation loss and accuracy of the model as it stands (BatchNorm judged by _fresh_batchnorm)."""
        with self._fresh_batchnorm(model):
            logits = predict(model, self.val, self.device)
        target = targets_of(self.val)
        return {"val_loss": F.cross_entropy(logits, target).item(),
                "val_acc": (logits.argmax(-1) == target).float().mean().item()}

    def _save_checkpoint(self, epoch: int, model, objective, optimizer, scheduler, history, best, best_state,
                         bad_epochs) -> None:
        if self.checkpoint_path is None or not distributed.is_main():
            return
        checkpoint.save_checkpoint(self.checkpoint_path, {
            "stage": self.stage, "epoch": epoch, "model": model.state_dict(), "objective": objective.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": rng_state(),
            "history": history, "best": best, "best_state": best_state, "bad_epochs": bad_epochs,
            "bad_steps": int(self._bad_steps), "lr": self._lr,
            "weights": [getattr(m, "weight", None) for m in objective.methods],
        })

    def _load_checkpoint(self) -> dict | None:
        if self.checkpoint_path is None:
            return None
        saved = checkpoint.load_checkpoint(self.checkpoint_path)
        if saved is None:
            return None
        if saved.get("stage") != self.stage:
            raise DistilError(f"checkpoint {self.checkpoint_path} belongs to stage '{saved.get('stage')}', "
                              f"not '{self.stage}'; remove it or start a new run.")
        return saved


def _moving_lr(cfg: TrainConfig) -> bool:
    """Whether the lr changes during the stage (a warm-up or a schedule): lr_factor is 1.0 at every step otherwise."""
    return bool(cfg.warmup_epochs) or cfg.scheduler in ("cosine", "step")


def _is_conv_net(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())
