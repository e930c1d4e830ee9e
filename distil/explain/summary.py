"""The report's section on transparent students: labels alone vs distilled, accuracy and fidelity side by side."""

from __future__ import annotations

SIZE_WORDS = [("rules", "rules"), ("conditions", "conditions"), ("inner_nodes", "inner nodes"), ("nodes", "nodes"),
              ("leaves", "leaves"), ("nonzero_weights", "non-zero weights")]

COLUMNS = ["student", "top-1 alone", "top-1 distilled", "fidelity alone", "fidelity distilled",
           "perturbed fid. alone", "perturbed fid. distilled", "size alone", "size distilled"]

CAPTIONS = {
    "tree.png": "the distilled decision tree",
    "importance.png": "global feature importance of each distilled student",
    "linear_weights.png": "the distilled linear student's weights per class",
    "soft_tree_filters.png": "the distilled soft tree's inner-node filters and leaves",
}


def size_text(size: dict[str, int]) -> str:
    """'48 leaves, depth 6' from a student's size record."""
    parts = [f"{size[key]} {word}" for key, word in SIZE_WORDS if key in size]
    if "depth" in size:
        parts.append(f"depth {size['depth']}")
    return ", ".join(parts)


def pct(value: float) -> str:
    """0.8421 -> '84.21%'."""
    return f"{value * 100:.2f}%"


def student_rows(explain: dict) -> list[list[str]]:
    """One row per student in COLUMNS order."""
    rows = []
    for kind, v in explain["students"].items():
        alone, distilled = v["alone"], v["distilled"]
        rows.append([kind, pct(alone["top1"]), pct(distilled["top1"]), pct(alone["fidelity"]),
                     pct(distilled["fidelity"]), pct(alone["fidelity_perturbed"]),
                     pct(distilled["fidelity_perturbed"]), size_text(alone["size"]), size_text(distilled["size"])])
    return rows


def render_explain(explain: dict) -> list[str]:
    """The markdown lines of the transparent-students section of report.md."""
    t = explain["transfer"]
    table = ["| " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * 6 + "---|---|"]
    table += ["| " + " | ".join(row) + " |" for row in student_rows(explain)]
    plots = [f"![{CAPTIONS.get(p.rsplit('/', 1)[-1], p)}]({p})" for p in explain.get("plots", [])]
    return [
        "## Transparent students",
        "",
        f"Teacher top-1: {pct(explain['teacher']['top1'])}. Each transparent student is trained twice: on the "
        f"labels of the {t['train_inputs']} training inputs alone, and distilled from the teacher on those inputs "
        f"plus {t['query_points']} generated query points it labels (soft labels at temperature "
        f"{t['temperature']:g}). Fidelity is agreement with the teacher's predicted class on the test split; "
        f"perturbed fidelity, on test inputs plus Gaussian noise of {explain['test_noise']:g} feature-std.",
        "",
        *table,
        "",
        *[line for plot in plots for line in (plot, "")],
        "`distil explain RUN_DIR` prints the rules and feature importance; `--input N` adds the decision path of "
        "test sample N. The fitted students are in `explain/students.npz`.",
        "",
    ]
