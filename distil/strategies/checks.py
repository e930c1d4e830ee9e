"""Recipe checks the schema alone cannot make: each strategy's settings, schedules and per-sample weights."""

from __future__ import annotations

from distil.errors import DistilError
from distil.methods.base import method_class
from distil.recipe import DistillConfig, LossTerm, Recipe, add_check

STRATEGY_OF = {"teachers": "multi_teacher", "combine": "multi_teacher", "features_from": "multi_teacher",
               "peers": "online", "online_teacher": "online", "generations": "self", "ensemble": "self",
               "tasks": "continual", "scenario": "continual", "labeled": "transfer_set", "threshold": "transfer_set"}
NO_TEACHER = {"continual": "it trains no teacher", "online": "it has one only with distill.online_teacher: true"}
NO_ALONE = {"self": "generation 0 (labels only) is its reference",
            "continual": "plain fine-tuning and joint training are its references"}


def check_terms(terms: list[LossTerm], field: str = "distill.losses") -> None:
    """Schedules name the weight or a float parameter of their method; per-sample weights go on teacher terms."""
    for i, term in enumerate(terms):
        cls = method_class(term.name)
        floats = [k for k, info in cls.Params.model_fields.items() if info.annotation in (float, "float")]
        for key in term.schedule or {}:
            if key != "weight" and key not in floats:
                raise DistilError(f"{field}.{i}.schedule.{key}: '{term.name}' has no float parameter '{key}'; "
                                  f"schedule one of: {', '.join(['weight', *floats])}.")
        if term.sample_weight and not cls.needs_teacher:
            raise DistilError(f"{field}.{i}.sample_weight: '{term.name}' does not read the teacher; put "
                              "sample_weight on a teacher term such as kd.")


@add_check
def check_recipe(recipe: Recipe) -> None:
    """Raise DistilError naming the first strategy setting that is misplaced or inconsistent."""
    d = recipe.distill
    defaults = DistillConfig()
    for key, strategy in STRATEGY_OF.items():
        if d.strategy != strategy and getattr(d, key) != getattr(defaults, key):
            raise DistilError(f"distill.{key} is a setting of strategy {strategy}, not {d.strategy}; remove it or "
                              f"set distill.strategy: {strategy}.")
    check_terms(d.losses)
    if recipe.data.unlabeled is not None and d.strategy != "transfer_set":
        raise DistilError("data.unlabeled is read by the transfer_set strategy only; remove it or set "
                          "distill.strategy: transfer_set.")
    if d.strategy != "offline" and recipe.cache is not None:
        raise DistilError(f"cache: the {d.strategy} strategy runs its teachers live; remove the cache section.")
    if d.augment is not None and recipe.cache is not None:
        raise DistilError("distill.augment makes new inputs a teacher cache does not hold; remove distill.augment "
                          "or the cache section.")
    if d.strategy in NO_TEACHER and not (d.strategy == "online" and d.online_teacher):
        for section in ("compress", "export", "explain"):
            if getattr(recipe, section, None) is not None:
                raise DistilError(f"{section} needs a teacher but the {d.strategy} strategy has none "
                                  f"({NO_TEACHER[d.strategy]}); remove the {section} section.")
    if recipe.eval.seeds > 1 and recipe.lm is None and recipe.tabular is None:
        _check_seeds(recipe)
    if d.strategy == "multi_teacher":
        _check_teachers(d)
    elif d.strategy == "transfer_set":
        u = recipe.data.unlabeled
        if u is None or (u.fraction is None) == (u.name is None):
            raise DistilError("data.unlabeled: the transfer_set strategy needs a pool: set data.unlabeled.fraction "
                              "(a share of the training split) or data.unlabeled.name (another dataset), not both.")
    elif d.strategy == "continual":
        if d.tasks is None:
            raise DistilError("distill.tasks: the continual strategy needs tasks, e.g. tasks: 5 or "
                              "tasks: [[0, 1], [2, 3]].")
        if recipe.finetune is not None:
            raise DistilError("finetune: the continual strategy has no single labeled set to fine-tune on; remove "
                              "the finetune section.")
    elif d.strategy == "online" and d.online_teacher and recipe.teacher.checkpoint:
        raise DistilError("teacher.checkpoint: the online teacher trains from scratch with the students; remove "
                          "teacher.checkpoint or set distill.online_teacher: false.")


def _check_seeds(recipe: Recipe) -> None:
    """Paired seeds (distil.seeds) pair the distilled student with the student alone: say so before training."""
    d = recipe.distill
    if d.strategy in NO_ALONE:
        raise DistilError(f"eval.seeds: the {d.strategy} strategy trains no student alone to pair seeds with "
                          f"({NO_ALONE[d.strategy]}); set eval.seeds: 1 and run each seed with --set seed=N.")
    if not d.baseline:
        raise DistilError(f"eval.seeds: {recipe.eval.seeds} paired seeds need the student alone; set "
                          "distill.baseline: true or eval.seeds: 1.")


def _check_teachers(d: DistillConfig) -> None:
    if len(d.teachers) < 2:
        raise DistilError("distill.teachers: the multi_teacher strategy needs at least two teachers (for one, use "
                          "strategy offline).")
    if d.features_from >= len(d.teachers):
        raise DistilError(f"distill.features_from: {d.features_from} is not a teacher; use 0..{len(d.teachers) - 1}.")
    for i, member in enumerate(d.teachers):
        classes = member.classes or []
        if len(set(classes)) != len(classes) or any(c < 0 for c in classes):
            raise DistilError(f"distill.teachers.{i}.classes: give distinct class indices (0 or more).")
