"""Fuzz the recipe loader: any file content and any --set override give a Recipe or a DistilError, nothing else."""

import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distil.errors import DistilError
from distil.recipe import Recipe, load_recipe

FOLDER = Path(tempfile.mkdtemp(prefix="distil-fuzz-"))
FIELDS = ["name", "seed", "device", "data", "teacher", "student", "distill", "train", "eval", "cache", "track",
          "losses", "weight", "temperature", "epochs", "lr", "batch_size", "augment", "views", "limit", "hidden",
          "early_stopping", "patience", "metric", "checkpoint", "synthetic", "shape", "topk", "dtype", "tensorboard",
          "max_bad_steps", "milestones", "0", "1"]
PATHS = ["name", "seed", "train.lr", "train.epochs", "distill.losses", "distill.losses.0",
         "distill.losses.1.temperature", "distill.losses.5.weight", "data.synthetic.shape", "data",
         "teacher.hidden.0", "cache", "cache.topk", "track.mlflow", "train.early_stopping.patience", "eval", "x.y",
         "name.a", "..", ""]
SETTINGS = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) \
    | st.sampled_from(["mlp", "kd", "ce", "fp16", "val_acc", "cpu", "auto", "digits", "synthetic"])
trees = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6) | st.integers(), inner,
                                       max_size=5), max_leaves=20)
override_values = st.text(max_size=20) | scalars.map(lambda v: yaml.safe_dump(v).removesuffix("\n...\n").strip())
overrides = st.lists(st.text(max_size=30) | st.builds(lambda k, v: f"{k}={v}", st.sampled_from(PATHS),
                                                      override_values), max_size=3)


def load(content: bytes, sets: list[str]) -> None:
    path = FOLDER / "recipe.yaml"
    path.write_bytes(content)
    try:
        assert isinstance(load_recipe(path, sets), Recipe)
    except DistilError as exc:
        assert str(exc) and "\n" not in str(exc).strip(), repr(str(exc))


@SETTINGS
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode), overrides)
def test_any_file_content_gives_a_recipe_or_a_distil_error(content, sets):
    load(content, sets)


@SETTINGS
@given(trees, overrides)
def test_any_yaml_tree_gives_a_recipe_or_a_distil_error(tree, sets):
    load(yaml.safe_dump(tree).encode(), sets)


@SETTINGS
@given(st.dictionaries(st.sampled_from(["train", "distill", "data", "teacher"]), trees, max_size=3), overrides)
def test_sections_with_any_content_give_a_recipe_or_a_distil_error(tree, sets):
    load(yaml.safe_dump(tree).encode(), sets)


def test_known_yaml_traps_give_distil_errors():
    for content in [b"seed: 2001-02-30\n", b"a: &x [*x]\ntrain: *x\n", b"[" * 1200, b"\xff\xfe", b"train: {lr: .nan}\n",
                    b"!!python/object:os.system {}\n", b"name: {a: 1}\n"]:
        load(content, [])
    for sets in (["train.lr=2001-02-30"], ["seed=[[[[["], ["distill.losses.9.weight=1"], ["=1"], ["data"]):
        load(b"name: x\n", sets)
