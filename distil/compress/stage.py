"""The compress and export stages of a run: prune (+ recovery distillation), quantize, export to ONNX, measure.

Order: the distilled student is pruned and recovered (fp32, `models/student-pruned.pt`), then quantized to int8
(`models/student-int8.pt`, CPU); the last fp32 model is exported (`models/student.onnx`) and checked with ONNX
Runtime. Int8 and ONNX Runtime rows are measured on the CPU, where those models run.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from distil.compress import prune as pr
from distil.compress import quantize as q
from distil.compress.files import load_any, save_compressed
from distil.data import load_dataset
from distil.engine import predict, targets_of
from distil.errors import DistilError
from distil.methods import build_objective
from distil.metrics import classification_metrics
from distil.profile import count_parameters, profile_model, profile_models
from distil.recipe import DataConfig, ExportConfig, ModelConfig, load_recipe
from distil.teachers import LiveTeacher

if TYPE_CHECKING:
    from distil.context import RunContext

CPU = torch.device("cpu")
FILES = {"pruned": "student-pruned.pt", "int8": "student-int8.pt", "onnx": "student.onnx"}


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Ship:
    """Compress and export the distilled student of `run`, then add their rows and sections to its results."""

    def __init__(self, run: RunContext, teacher: nn.Module | None, student: nn.Module) -> None:
        self.run, self.student = run, student
        self.splits = run.splits
        self.example = self.splits.train.x[:2].cpu()
        self.pruned: nn.Module | None = None
        self.int8: nn.Module | None = None
        self.widths: dict[str, int] = {}
        self.target = targets_of(self.splits.test)
        self.teacher_logits = predict(teacher, self.splits.test, run.device) if teacher is not None else None
        self.sections: dict[str, dict] = {"compress": {}, "export": {}}

    def path(self, role: str) -> Path:
        """Where the model of `role` (pruned, int8, onnx) is written."""
        return self.run.dir / "models" / FILES[role]

    def meta(self, role: str, **extra) -> dict:
        """What rebuilds the student's architecture, as `RunContext.save_model` writes it."""
        cfg = self.run.recipe.student
        return {"config": cfg.model_dump(include=set(ModelConfig.model_fields)),
                "input_shape": list(self.splits.input_shape), "num_classes": self.splits.num_classes,
                "class_names": list(self.splits.class_names),
                "extra": {"run": self.run.recipe.name, "role": role, **extra}, **self.run.inputs_metadata}

    @property
    def shipped(self) -> tuple[str, nn.Module]:
        """The last fp32 model of the chain (pruned if pruning ran, else the student) and its role."""
        return ("pruned", self.pruned) if self.pruned is not None else ("student", self.student)

    def compress(self) -> dict[str, nn.Module]:
        """Prune and recover, then quantize, as the recipe's compress section says; returns the fp32 models made."""
        c = self.run.recipe.compress
        if c is not None and c.prune is not None:
            self.pruned = self._prune()
        if c is not None and c.quantize is not None:
            self.int8 = self._quantize()
        return {"pruned": self.pruned} if self.pruned is not None else {}

    def _prune(self) -> nn.Module:
        p, run = self.run.recipe.compress.prune, self.run
        path = self.path("pruned")
        if run.resume and path.is_file():
            model, meta = load_any(path, trust_code=run.trusted_code)
            self.widths = meta.get("widths", {})
            self.sections["compress"]["prune"] = meta["extra"]["prune"]
            return model.to(run.device)
        model = copy.deepcopy(self.student).cpu()
        params_before = count_parameters(model)
        if p.method == "structured":
            self.widths = pr.prune_channels(model, self.example, p.amount)
        else:
            pr.prune_magnitude(model, p.amount)
        model = model.to(run.device)
        before = (predict(model, self.splits.test, run.device).argmax(-1) == self.target).float().mean().item()
        if p.recovery_epochs:  # the run's one way to train: seeded, checkpointed, resumable, logged
            model = run.trainer.fit("recover", lambda: model, build_objective(p.losses), self.splits.train,
                                    teacher=LiveTeacher(copy.deepcopy(self.student)), epochs=p.recovery_epochs,
                                    lr=p.recovery_lr)
        pr.make_permanent(model)
        info = {"method": p.method, "amount": p.amount, "params_before": params_before,
                "params_after": count_parameters(model), "weight_sparsity": pr.weight_sparsity(model),
                "widths": self.widths, "top1_before_recovery": before, "recovery_epochs": p.recovery_epochs}
        self.sections["compress"]["prune"] = info
        save_compressed(path, model, self.meta("pruned", prune=info), widths=self.widths)
        return model.eval()

    def _quantize(self) -> nn.Module:
        qc, run = self.run.recipe.compress.quantize, self.run
        source_role, source = self.shipped
        mode = q.resolve_mode(qc.mode, source)
        path = self.path("int8")
        n = min(qc.calibration_samples, len(self.splits.train))
        self.sections["compress"]["quantize"] = {"mode": mode, "backend": qc.backend, "source": source_role,
                                                 "calibration_samples": n if mode == "static" else 0}
        if run.resume and path.is_file():
            return load_any(path, trust_code=run.trusted_code)[0]
        order = torch.randperm(len(self.splits.train), generator=torch.Generator().manual_seed(run.recipe.seed))
        model = q.quantize(source, mode, qc.backend, self.splits.train.x[order[:n]])
        save_compressed(path, model, self.meta("int8", source=source_role), widths=self.widths,
                        quantized={"mode": mode, "backend": qc.backend})
        return model

    def export(self) -> None:
        """Export the shipped fp32 model to ONNX and check it against PyTorch on the test split."""
        from distil.compress.onnx_export import OnnxModel, check_parity, export_checked

        cfg, run = self.run.recipe.export, self.run
        if cfg is None:
            return
        role, model = self.shipped
        path = self.path("onnx")
        if run.resume and path.is_file():
            parity = check_parity(OnnxModel(path), model, self.splits.test, cfg)
        else:
            metadata = self.meta("onnx", source=role)
            parity = export_checked(model, self.splits.input_shape, path, self.splits.test, cfg, metadata)
        self.sections["export"] = {"file": f"models/{path.name}", "source": role, "format": cfg.format,
                                   "opset": cfg.opset, "bytes": path.stat().st_size, "sha256": sha256_of(path),
                                   **parity}

    def finish(self, results: dict) -> None:
        """Add the int8 and ONNX Runtime rows (measured on the CPU) and the compress / export sections."""
        role, source = self.shipped
        reference = predict(copy.deepcopy(source).cpu(), self.splits.test, CPU)
        prefix = "pruned, " if role == "pruned" else ""
        rows = results["models"]
        if self.pruned is not None:
            recovered = " + recovered" if self.run.recipe.compress.prune.recovery_epochs else ""
            rows["pruned"]["label"] = f"student (pruned{recovered})"
        cpu_latency = {r: self._profile(copy.deepcopy(m).cpu())["latency_ms"]
                       for r, m in (("student", self.student), ("pruned", self.pruned)) if m is not None}
        if self.int8 is not None:
            mode = self.sections["compress"]["quantize"]["mode"]
            rows["int8"] = self._measure("int8", self.int8, f"student ({prefix}int8 {mode})",
                                         count_parameters(source), None, reference)
        if self.sections["export"]:
            from distil.compress.onnx_export import OnnxModel

            path = self.path("onnx")
            rows["onnx"] = self._measure("onnx", OnnxModel(path), f"student ({prefix}ONNX Runtime)",
                                         count_parameters(source), path.stat().st_size, reference)
        results["cpu_latency_ms"] = cpu_latency  # the fp32 rows again on the CPU, beside the int8 / ONNX ones
        if self.sections["compress"]:
            results["compress"] = self.sections["compress"]
        if self.sections["export"]:
            results["export"] = self.sections["export"]

    def _profile(self, model: nn.Module) -> dict:
        e = self.run.recipe.eval
        return profile_model(model, self.splits.input_shape, CPU, latency_batch=e.latency_batch,
                             throughput_batch=e.throughput_batch, repeats=e.latency_repeats)

    def _measure(self, role: str, model: nn.Module, label: str, params: int, nbytes: int | None,
                 reference: torch.Tensor) -> dict:
        logits = predict(model, self.splits.test, CPU)
        metrics = classification_metrics(logits, self.target, self.splits.num_classes,
                                         teacher_logits=self.teacher_logits, ece_bins=self.run.recipe.eval.ece_bins)
        metrics.update(self._profile(model))
        metrics["params"] = params
        if nbytes is not None:
            metrics["bytes"] = nbytes
        metrics["agreement_source"] = (logits.argmax(-1) == reference.argmax(-1)).float().mean().item()
        self.run.log.write({"stage": "evaluate", "model": role, **metrics})
        return {"label": label, "device": "cpu", **metrics}


def run_folder_of(path: Path) -> Path | None:
    """The run folder a model file lives in (runs/<name>/models/<file>), when its recipe.yaml is there."""
    folder = Path(path).parent.parent
    return folder if Path(path).parent.name == "models" and (folder / "recipe.yaml").is_file() else None


def export_file(target: Path, out: Path | None = None, data: DataConfig | None = None, *,
                trust_code: bool = False) -> tuple[Path, dict]:
    """`distil export`: a run's shipped fp32 student (or a model file) to ONNX, checked on the test split
    (`trust_code` as in `distil.load`)."""
    from distil.compress.onnx_export import OnnxModel, export_checked

    target = Path(target)
    if target.is_dir():
        folder = target
        path = next((p for p in (target / "models" / "student-pruned.pt", target / "models" / "student.pt")
                     if p.is_file()), None)
        if path is None:
            raise DistilError(f"{target} has no models/student.pt; finish the run first (distil run RECIPE --resume).")
    elif target.is_file():
        path, folder = target, run_folder_of(target)
    else:
        raise DistilError(f"{target} does not exist; give a run folder (runs/<name>) or a model file (.pt).")
    recipe = load_recipe(folder / "recipe.yaml") if folder is not None else None
    if data is None and recipe is None:
        raise DistilError(f"{path} is not inside a run folder, so the data to check the export on is unknown; pass "
                          "--data NAME (and --data-path).")
    data = data or recipe.data
    model, meta = load_any(path, trust_code=trust_code)
    if meta.get("quantized"):
        raise DistilError(f"{path} is an int8 model, which the ONNX export does not take; export the fp32 model it "
                          "came from (models/student-pruned.pt or models/student.pt).")
    splits = load_dataset(data)
    if tuple(meta["input_shape"]) != tuple(splits.input_shape) or meta["num_classes"] != splits.num_classes:
        raise DistilError(f"{path} expects inputs {tuple(meta['input_shape'])} with {meta['num_classes']} classes "
                          f"but data '{data.name}' has {tuple(splits.input_shape)} with {splits.num_classes}; "
                          "check it on the data it was trained on.")
    dest = Path(out) if out else folder / "models" / "student.onnx" if target.is_dir() else path.with_suffix(".onnx")
    extra = {"run": meta["extra"].get("run"), "role": "onnx", "source": meta["extra"].get("role", path.stem)}
    metadata = {"config": meta["config"], "input_shape": meta["input_shape"], "num_classes": meta["num_classes"],
                "class_names": meta["class_names"], "extra": extra,
                "preprocess": meta.get("preprocess") or splits.preprocess,
                "data": meta.get("data") or data.model_dump(mode="json")}
    cfg = recipe.export if recipe is not None and recipe.export is not None else ExportConfig()
    parity = export_checked(model, splits.input_shape, dest, splits.test, cfg, metadata)
    profiles = profile_models({"onnx": OnnxModel(dest), "torch": model.cpu()}, splits.input_shape, CPU,
                              throughput_batch=64, repeats=30)
    latency = {name: profile["latency_ms"] for name, profile in profiles.items()}
    return dest, {**parity, "bytes": dest.stat().st_size, "sha256": sha256_of(dest), "latency_ms": latency}
