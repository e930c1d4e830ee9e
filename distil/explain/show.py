"""What `distil explain RUN_DIR` prints: the rules, global feature importance and a test sample's decision path,
read from the students the explain stage saved (the plots are re-rendered from them, nothing is refitted)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distil.data import load_dataset
from distil.errors import DistilError
from distil.explain.bundle import BUNDLE, Explained, load_bundle
from distil.explain.plots import render_plots
from distil.explain.rules import RuleListStudent, numbered, order_rules, tree_rules
from distil.explain.stage import flat
from distil.explain.summary import pct, size_text
from distil.explain.tree import TreeStudent
from distil.recipe import load_recipe

TOP_FEATURES = 10


def rule_lines(explained: Explained) -> list[str]:
    """The distilled rule list, or the distilled tree read as rules when the run has no `rules` student."""
    students = {kind: variants["distilled"] for kind, variants in explained.students.items()}
    names = explained.names
    if isinstance(students.get("rules"), RuleListStudent):
        return ["rules (distilled rule list, first match wins):", *students["rules"].text(names)]
    if isinstance(students.get("tree"), TreeStudent):
        tree = students["tree"]
        rules = order_rules(tree_rules(tree.model, tree.num_classes))
        return ["rules (the distilled tree's leaves, first match wins):", *numbered(rules, names)]
    return ["rules: this run has no tree or rules student (add tree or rules to explain.students)."]


def importance_lines(explained: Explained) -> list[str]:
    """Each distilled student's most important features."""
    lines = [f"global feature importance (top {TOP_FEATURES}):"]
    for kind, variants in explained.students.items():
        scores = variants["distilled"].importance()
        top = np.argsort(-scores)[:TOP_FEATURES]
        lines.append(f"  {kind:<10} " + ", ".join(f"{explained.names.features[j]} {scores[j]:.3f}" for j in top))
    return lines


def score_lines(explained: Explained) -> list[str]:
    """Accuracy, fidelity and size of each student, labels alone vs distilled."""
    r = explained.results
    lines = [f"teacher top-1 {pct(r['teacher']['top1'])}; students (test split):"]
    for kind, variants in r["students"].items():
        for variant in ("alone", "distilled"):
            m = variants[variant]
            lines.append(f"  {kind:<10} {variant:<9} top-1 {pct(m['top1']):>7}  fidelity {pct(m['fidelity']):>7}  "
                         f"perturbed {pct(m['fidelity_perturbed']):>7}  {size_text(m['size'])}")
    return lines


def test_inputs(run_dir: Path, explained: Explained) -> tuple[np.ndarray, np.ndarray]:
    """The run's test split (flattened inputs, labels), loaded again from its resolved recipe."""
    recipe = load_recipe(run_dir / "recipe.yaml")
    splits = load_dataset(recipe.data, seed=recipe.seed)
    if tuple(splits.input_shape) != explained.input_shape:
        raise DistilError(f"{run_dir}: the data now gives inputs shaped {tuple(splits.input_shape)}, but the students "
                          f"learned {explained.input_shape}; rerun the recipe with --overwrite.")
    return flat(splits.test.x), splits.test.y.numpy()


def path_lines(run_dir: Path, explained: Explained, index: int) -> list[str]:
    """How each distilled student decides test sample `index`."""
    x_test, labels = test_inputs(run_dir, explained)
    if not 0 <= index < len(labels):
        raise DistilError(f"--input: {index} is not a test sample; give a number from 0 to {len(labels) - 1}.")
    classes = explained.names.classes
    x = x_test[index]
    lines = [f"test sample {index}: label {classes[labels[index]]}, "
             f"teacher predicts {classes[explained.teacher_test_predictions[index]]}"]
    for kind, variants in explained.students.items():
        student = variants["distilled"]
        predicted = classes[int(np.argmax(student.predict_proba(x[None])[0]))]
        lines.append(f"{kind} predicts {predicted}:")
        lines += [f"  {line}" for line in student.decision_path(x, explained.names)]
    return lines


def explain_run(run_dir: Path, index: int | None = None) -> str:
    """The text `distil explain` prints; the plots in RUN_DIR/explain/ are re-rendered on the way."""
    run_dir = Path(run_dir)
    explained = load_bundle(run_dir / "explain" / BUNDLE)
    sections = [score_lines(explained), rule_lines(explained), importance_lines(explained)]
    if index is not None:
        sections.append(path_lines(run_dir, explained, index))
    plots = render_plots(explained, run_dir / "explain")
    sections.append(["plots: " + ", ".join(str(p) for p in plots)])
    return "\n\n".join("\n".join(lines) for lines in sections)
