"""The one training loop every stage and strategy uses: steps, precision, accumulation, checkpoints, resume."""

from __future__ import annotations

import copy
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from distil import checkpoint
from distil.batch import Batch, iterate, num_batches
from distil.data.augment import view_of
from distil.errors import DistilError
from distil.methods.base import Outputs
from distil.methods.objective import Objective
from distil.recipe import AugmentConfig, TrainConfig
from distil.runlog import MetricsLog
from distil.teachers import TeacherSource


def resolve_device(spec: str = "auto") -> torch.device:
    """`auto` picks CUDA when available, else the CPU; anything else is passed to torch.device."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise DistilError(f"device: '{spec}' is not a device; use auto, cpu or cuda[:N].") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DistilError("device: CUDA was asked for but is not available here; use device: auto or cpu.")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so the same recipe and seed give the same run."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every RNG state a training step consumes (dropout, augmentation), for exact resume."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore the states `rng_state` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def make_optimizer(params: list[nn.Parameter], cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """SGD (Nesterov-free, with momentum) or AdamW over `params`."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)


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
    chunks = [model(b.x.to(device)).float().cpu() for b in iterate(dataset, batch_size, shuffle=False)]
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


@dataclass
class Fit:
    """One training stage: a model learning `objective` on `train`, validated on `val`."""

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
    lr: float | None = None
    checkpoint_path: Path | None = None
    log: MetricsLog | None = None
    quiet: bool = False
    augment: AugmentConfig | None = None

    def prepare_batch(self, batch: Batch, epoch: int) -> Batch:
        """Move a batch to the device and, with augmentation, replace it by this epoch's view of its samples."""
        views = self.augment.views if self.augment is not None else 1
        return view_of(batch.to(self.device), epoch % views, self.augment, self.seed)

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
        model, objective = self.model.to(device), self.objective.to(device)
        if device.type == "cuda" and _is_conv_net(model):
            model.to(memory_format=torch.channels_last)
        params = [p for p in list(model.parameters()) + list(objective.parameters()) if p.requires_grad]
        optimizer = make_optimizer(params, cfg, self.lr or cfg.lr)
        steps_per_epoch = max(1, num_batches(self.train, cfg.batch_size) // cfg.accumulate)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, steps_per_epoch, epochs))

        history: list[dict] = []
        start_epoch, best, best_state, bad_epochs = 0, None, None, 0
        saved = self._load_checkpoint() if resume else None
        if saved is not None:
            model.load_state_dict(saved["model"])
            objective.load_state_dict(saved["objective"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            set_rng_state(saved["rng"])
            history, start_epoch = saved["history"], saved["epoch"]
            best, best_state, bad_epochs = saved["best"], saved["best_state"], saved["bad_epochs"]
            if self.log is not None:
                self.log.rewind(self.stage, start_epoch)

        # None lets tqdm hide itself when stderr is not a terminal; --quiet and CI hide it always
        hide = True if self.quiet or os.environ.get("CI") else None
        bar = tqdm(range(start_epoch, epochs), desc=self.stage, disable=hide,
                   initial=start_epoch, total=epochs, leave=False)
        stopped_early = False
        forward = torch.compile(model) if cfg.compile else model  # same parameters; the compiled graph runs steps
        for epoch in bar:
            record = self._train_epoch(epoch, model, forward, objective, optimizer, scheduler)
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
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        return FitResult(model, history, stopped_early)

    def _train_epoch(self, epoch: int, model: nn.Module, forward: nn.Module, objective: Objective, optimizer,
                     scheduler) -> dict:
        cfg, device = self.cfg, self.device
        model.train()
        objective.train()
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
        loss_sum = torch.zeros((), device=device)
        term_sums: dict[str, torch.Tensor] = {}
        correct = torch.zeros((), device=device, dtype=torch.long)
        first_bad = torch.full((), -1, device=device, dtype=torch.long)
        seen = 0
        start = time.perf_counter()
        steps = num_batches(self.train, cfg.batch_size)
        optimizer.zero_grad(set_to_none=True)
        batches = iterate(self.train, cfg.batch_size, shuffle=True, generator=generator,
                          num_workers=cfg.num_workers, pin_memory=device.type == "cuda")
        for step, batch in enumerate(batches):
            batch = self.prepare_batch(batch, epoch)
            teacher_out = self.teacher.outputs(batch) if self.objective.needs_teacher else None
            with autocast:
                student_out = Outputs(forward(batch.x))
                loss, terms = objective(student_out, teacher_out, batch.y)
            (loss / cfg.accumulate).backward()
            if (step + 1) % cfg.accumulate == 0 or step + 1 == steps:
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
            global_step = epoch * steps + step
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), global_step, first_bad)
            n = batch.y.shape[0]
            seen += n
            loss_sum += loss.detach().float() * n
            for name, value in terms.items():
                term_sums[name] = term_sums.get(name, 0) + value.float() * n
            correct += (student_out.logits.detach().argmax(-1) == batch.y).sum()
            if (step + 1) % cfg.log_every == 0:
                self._check_finite(first_bad, epoch)
        self._check_finite(first_bad, epoch)
        record = {"stage": self.stage, "epoch": epoch + 1, "loss": loss_sum.item() / seen,
                  "train_acc": correct.item() / seen, "lr": optimizer.param_groups[0]["lr"],
                  "seconds": round(time.perf_counter() - start, 4)}
        record.update({f"loss_{k}": v.item() / seen for k, v in term_sums.items()})
        return record

    def _check_finite(self, first_bad: torch.Tensor, epoch: int) -> None:
        bad_step = int(first_bad.item())
        if bad_step >= 0:
            path = self.checkpoint_path
            kept = f"the last good checkpoint {path} is kept" if path else "nothing was saved"
            raise DistilError(f"{self.stage}: the loss became NaN or infinite at step {bad_step} (epoch {epoch + 1}); "
                              f"{kept}; lower train.lr or set train.grad_clip.")

    def _validate(self, model: nn.Module) -> dict:
        logits = predict(model, self.val, self.device)
        target = targets_of(self.val)
        return {"val_loss": F.cross_entropy(logits, target).item(),
                "val_acc": (logits.argmax(-1) == target).float().mean().item()}

    def _save_checkpoint(self, epoch: int, model, objective, optimizer, scheduler, history, best, best_state,
                         bad_epochs) -> None:
        if self.checkpoint_path is None:
            return
        checkpoint.save(self.checkpoint_path, {
            "stage": self.stage, "epoch": epoch, "model": model.state_dict(), "objective": objective.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(),
            "history": history, "best": best, "best_state": best_state, "bad_epochs": bad_epochs,
        })

    def _load_checkpoint(self) -> dict | None:
        if self.checkpoint_path is None or not self.checkpoint_path.is_file():
            return None
        saved = checkpoint.load(self.checkpoint_path)
        if saved.get("stage") != self.stage:
            raise DistilError(f"checkpoint {self.checkpoint_path} belongs to stage '{saved.get('stage')}', "
                              f"not '{self.stage}'; remove it or start a new run.")
        return saved


def _is_conv_net(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())
