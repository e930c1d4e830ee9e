"""The commands a newcomer meets first: --version, models, init, show-config, and report after run."""

import pytest
import yaml
from cli_runner import run_cli

import distil
from distil.recipe import Recipe, dump_recipe, load_recipe
from distil.starter import starter_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def test_version(capsys):
    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0 and out.strip() == f"distil {distil.__version__}"


def test_models_counts_parameters_for_the_input_shape(capsys):
    code, out, _ = run_cli(["models", "--input-shape", "1,28,28", "--classes", "10"], capsys)
    assert code == 0 and "inputs (1, 28, 28), 10 classes" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()}
    mlp = 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10  # the default hidden [256, 256]
    assert rows["mlp"][1] == f"{mlp:,}" and "hidden," in rows["mlp"]
    assert rows["resnet8"][1] != "-" and "soft_tree" in rows
    code, out, _ = run_cli(["models", "--input-shape", "40", "--classes", "3"], capsys)
    rows = {line.split()[0]: line.split() for line in out.splitlines()}
    assert rows["resnet8"][1] == "-" and rows["mlp"][1] == f"{40 * 256 + 256 + 256 * 256 + 256 + 256 * 3 + 3:,}"


def test_models_refuses_a_bad_shape_in_one_line(capsys):
    code, _, err = run_cli(["models", "--input-shape", "1,x"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--input-shape" in err


def test_init_writes_every_section_and_run_takes_it_as_written(tmp_path, capsys):
    out = tmp_path / "starter.yaml"
    code, said, _ = run_cli(["init", "mnist1d", "--out", out], capsys)
    assert code == 0 and str(out) in said
    text = out.read_text()
    assert text.startswith("# A starter recipe for mnist1d: ") and "10 classes" in text
    keys = {line.lstrip("# ").split(":")[0] for line in text.splitlines() if not line.startswith(("  ", "#  "))}
    assert set(Recipe.model_fields) <= keys  # every top-level section, the optional ones commented out
    assert "# cache:" in text and "#   - {name: ce, weight: 0.5}" in text  # off sections and their lists
    assert load_recipe(out).model_dump() == starter_recipe("mnist1d").model_dump()
    code, ran, err = run_cli(["run", out, "--runs-dir", tmp_path / "runs", "-q", "--set", "data.limit=200",
                              "--set", "train.epochs=1", "--set", "train.lr=0.01", "--set", "teacher.hidden=[16]",
                              "--set", "eval.latency_repeats=3"], capsys)
    assert code == 0, err
    assert (tmp_path / "runs" / "mnist1d-kd" / "report.md").is_file()


def test_init_starts_from_the_shipped_recipe_and_keeps_existing_files(tmp_path, capsys):
    out = tmp_path / "digits.yaml"
    assert run_cli(["init", "--out", out], capsys)[0] == 0
    shipped = load_recipe()
    assert load_recipe(out).model_dump() == shipped.model_dump()  # the default recipe, commented
    code, _, err = run_cli(["init", "--out", out], capsys)
    assert code == 2 and "--force" in err
    code, _, err = run_cli(["init", "csv", "--out", tmp_path / "table.yaml"], capsys)
    assert code == 2 and "data.path" in err and not (tmp_path / "table.yaml").exists()


def test_show_config_prints_the_resolved_recipe_with_overrides(tiny_recipe, capsys):
    code, out, _ = run_cli(["show-config", tiny_recipe, "--set", "train.epochs=7"], capsys)
    assert code == 0
    shown = yaml.safe_load(out)
    assert shown["train"]["epochs"] == 7 and shown["data"]["limit"] == 300 and "track" in shown
    assert out == dump_recipe(load_recipe(tiny_recipe, ["train.epochs=7"]))
    code, _, err = run_cli(["show-config", tiny_recipe, "--set", "train.epoch=7"], capsys)
    assert code == 2 and "'train.epoch'" in err and "epochs" in err


def test_report_prints_what_run_printed(tiny_recipe, tmp_path, capsys):
    code, ran, _ = run_cli(["run", tiny_recipe, "--runs-dir", tmp_path], capsys)
    assert code == 0
    code, reported, _ = run_cli(["report", tmp_path / "tiny"], capsys)
    assert code == 0 and reported == ran
    assert "Δ top-1 vs the same student trained alone" in reported and "student (alone)" in reported
