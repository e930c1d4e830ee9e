"""Recipe validation, overrides and the errors they give."""

import pytest

from distil.errors import DistilError
from distil.recipe import apply_override, builtin_recipe_path, load_recipe, parse_override


def write(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_builtin_recipe_loads():
    recipe = load_recipe()
    assert builtin_recipe_path().is_file()
    assert recipe.data.name == "digits"
    assert [t.name for t in recipe.distill.losses] == ["ce", "kd"]


@pytest.mark.parametrize("path", sorted(builtin_recipe_path().parent.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.name and recipe.distill.losses


def test_overrides_reach_list_items_and_nested_fields(tmp_path):
    recipe = load_recipe(write(tmp_path, "name: x\n"), ["distill.losses.1.temperature=8", "train.epochs=30"])
    assert recipe.distill.losses[1].params["temperature"] == 8
    assert recipe.train.epochs == 30


@pytest.mark.parametrize("text, message", [
    ("trian: {epochs: 3}\n", "unknown field 'trian'"),
    ("train: {epochs: many}\n", "train.epochs"),
    ("train: {optimizer: adam}\n", "train.optimizer"),
    ("distill: {losses: [{name: kdd}]}\n", "unknown loss 'kdd'.*did you mean kd"),
    ("distill: {losses: [{name: kd, temp: 3}]}\n", "distill.losses.0.temp"),
    ("- a\n- b\n", "must be a mapping"),
    ("data: [1, 2\n", "not valid YAML at line"),
])
def test_bad_recipes_name_the_field(tmp_path, text, message):
    with pytest.raises(DistilError, match=message):
        load_recipe(write(tmp_path, text))


def test_missing_file_and_bad_override(tmp_path):
    with pytest.raises(DistilError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(DistilError, match="KEY=VALUE"):
        parse_override("train.epochs")
    with pytest.raises(DistilError, match="not an index"):
        apply_override({"a": [1]}, ["a", "3"], 2)
