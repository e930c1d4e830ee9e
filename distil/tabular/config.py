"""The `tabular:` recipe section: the table and its schema, the teachers and the student (pydantic only, no torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_VOCAB = 100_000  # distinct values a categorical column may have before it must be hashed


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SchemaConfig(_Strict):
    """Which columns are what: categorical (embedded, with an out-of-vocabulary slot), numeric (standardised with
    training statistics; missing values become the training mean plus a missing flag), multi-valued (a bag of
    categories, e.g. genres) and the label."""

    label: str = Field("label", description="the label column")
    task: Literal["binary", "multiclass", "regression"] = "binary"
    classes: int | None = Field(None, ge=2, description="multiclass: the number of classes the labels may have")
    categorical: list[str] = Field(default_factory=list)
    numeric: list[str] = Field(default_factory=list)
    multi_valued: list[str] = Field(default_factory=list)
    separator: str = Field("|", min_length=1, description="multi-valued cells: the separator between values")
    group: str | None = Field(None, description="the column that groups rows for gAUC (e.g. the user id)")
    teacher_only: list[str] = Field(default_factory=list, description="privileged fields: the teacher sees them, "
                                    "the student (and serving) does not (Xu et al. 2020)")
    hash_buckets: dict[str, int] = Field(default_factory=dict, description="categorical columns hashed into this "
                                         "many buckets instead of a vocabulary (for very many distinct values)")
    max_vocab: int = Field(MAX_VOCAB, ge=2, description="a categorical column with more distinct training values "
                           "is refused unless it is hashed (hash_buckets)")
    min_count: int = Field(1, ge=1, description="categorical values seen fewer times in training map to the OOV slot")

    @model_validator(mode="after")
    def _columns_once(self) -> SchemaConfig:
        seen: dict[str, str] = {}
        for kind in ("categorical", "numeric", "multi_valued"):
            for col in getattr(self, kind):
                if col in seen:
                    raise ValueError(f"column '{col}' is listed as {seen[col]} and as {kind}; list it once")
                if col == self.label:
                    raise ValueError(f"column '{col}' is the label; do not list it as a feature")
                seen[col] = kind
        for col in [*self.teacher_only, *self.hash_buckets]:
            if col not in seen:
                raise ValueError(f"column '{col}' is named in teacher_only/hash_buckets but is not a feature")
        if self.task == "multiclass" and self.classes is None:
            raise ValueError("task multiclass needs classes: the number of classes")
        if not seen:
            raise ValueError("the schema lists no feature columns; name categorical, numeric or multi_valued ones")
        return self


class TabularModelConfig(_Strict):
    """A tabular model: deepfm, dcn_v2, wide_deep (teachers), mlp, fm, lr (students)."""

    name: Literal["deepfm", "dcn_v2", "wide_deep", "mlp", "fm", "lr"]
    embed_dim: int = Field(16, ge=1, description="embedding size of every field")
    hidden: list[int] = Field(default_factory=lambda: [256, 128], description="the deep part's layer widths")
    cross_layers: int = Field(3, ge=1, description="dcn_v2: cross layers")
    dropout: float = Field(0.1, ge=0, lt=1)


def default_teachers() -> list[TabularModelConfig]:
    """DeepFM, DCN-v2 and Wide & Deep at their defaults."""
    return [TabularModelConfig(name=n) for n in ("deepfm", "dcn_v2", "wide_deep")]


class TabularConfig(_Strict):
    """Recommendation / tabular distillation (`distil run distil/recipes/movielens.yaml`): the split fractions and
    seed come from `data`, the loop from `train`, the student's losses from `distill.losses`."""

    dataset: Literal["movielens_100k", "csv"] = "movielens_100k"
    path: str | None = Field(None, description="csv: the file")
    columns: SchemaConfig | None = Field(None, description="csv: the schema of its columns (movielens_100k has "
                                         "its own)")
    split: Literal["random", "time"] = Field("random", description="movielens_100k: rows split at random (seeded) "
                                             "or by timestamp (the latest rows are the test split)")
    privileged: bool = Field(False, description="movielens_100k: add teacher-only fields (the item's and the user's "
                             "leave-one-out mean rating over all rows, the rating's hour and weekday)")
    teachers: list[TabularModelConfig] = Field(default_factory=default_teachers, min_length=1)
    distill_from: Literal["best", "ensemble"] = Field("best", description="the student learns from the teacher "
                                                     "with the best validation AUC, or the mean of all of them")
    student: TabularModelConfig = Field(default_factory=lambda: TabularModelConfig(name="mlp", embed_dim=4,
                                                                                    hidden=[32]))
    teacher_epochs: int | None = Field(None, ge=1, description="default: train.epochs")
    latency_batches: list[int] = Field(default_factory=lambda: [1, 512], min_length=1)
    export: bool = Field(True, description="ONNX export of the student (encoded inputs; encoders outside the graph)")
    transparent: list[Literal["rules", "tree", "linear"]] = Field(default_factory=list, description="transparent "
                                                                  "students (distil.explain) fitted on the "
                                                                  "distillation teacher's probabilities over "
                                                                  "readable serving-time features, each also on "
                                                                  "the labels alone: AUC, fidelity, the rules")
    threads: int = Field(1, ge=0, description="torch CPU threads while the tabular stages run (restored after): "
                         "these small embedding models run fastest on one, 2-8x slower on a busy many-core CPU "
                         "with more; 0 = torch's default")

    @model_validator(mode="after")
    def _csv_needs(self) -> TabularConfig:
        if self.dataset == "csv" and (self.path is None or self.columns is None):
            raise ValueError("dataset csv needs path (the file) and columns (its schema)")
        if self.dataset != "csv" and self.columns is not None:
            raise ValueError(f"dataset {self.dataset} has its own schema; drop columns or use dataset csv")
        return self
