"""report.html (self-contained, rendered in headless Chromium) and the opt-in trackers (TensorBoard, MLflow, W&B)."""

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_RECIPE
from PIL import Image

from distil.pipeline import run_recipe
from distil.recipe import load_recipe
from distil.report_html import bars_figure, confusion, curve_groups, tradeoff_figure
from distil.report_table import gains, render_gains, render_text

PROBE = """<script>window.addEventListener("load", () => {
  document.title = "PROBE" + JSON.stringify([...document.images].map(i => i.complete ? i.naturalWidth : -1));
});</script></body>"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """One tiny run with every tracker on (W&B offline, its files kept under the test's folder)."""
    folder = tmp_path_factory.mktemp("html")
    recipe = folder / "tiny.yaml"
    recipe.write_text(TINY_RECIPE + "track: {tensorboard: true, mlflow: true, wandb: true}\n")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WANDB_MODE", "offline")
        for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
            env.setenv(name, str(folder / "wandb-home"))
        return run_recipe(load_recipe(recipe), folder / "runs", quiet=True).run_dir


def embedded_images(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', page)]


def test_report_html_is_self_contained_with_every_plot(run_dir):
    page = (run_dir / "report.html").read_text()
    assert "<table>" in page and "student (distilled)" in page
    assert not re.search(r'(src|href)="(?!data:)', page), "the page must not load anything from outside"
    images = embedded_images(page)
    assert len(images) == 4  # bars, accuracy vs size / latency, training curves, confusion matrix
    for data in images:
        image = Image.open(io.BytesIO(data))
        image.verify()
        assert image.format == "PNG" and image.size[0] > 100
    with np.load(run_dir / "predictions.npz") as predictions:
        assert set(predictions.files) >= {"target", "teacher", "student", "alone", "class_names"}
        top1 = (predictions["student"] == predictions["target"]).mean()
    assert top1 == pytest.approx(json.loads((run_dir / "results.json").read_text())["models"]["student"]["top1"])


def test_curve_panels_and_confusion_counts():
    groups = curve_groups([{"stage": "distill", "epoch": 1, "loss": 1.0, "loss_kd": 0.5, "train_acc": 0.5,
                            "val_acc": 0.4, "lr": 0.1, "kd_temperature": 4.0, "seconds": 1.0}])
    assert groups == {"loss": ["loss", "loss_kd"], "accuracy": ["train_acc", "val_acc"], "learning rate": ["lr"],
                      "temperature": ["kd_temperature"]}
    assert confusion(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3).tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(chromium() is None, reason="Debian's chromium is not installed (`make test` installs it when run "
                    "as root: apt-get install -y chromium); cannot render report.html")
def test_report_html_renders_in_headless_chromium_without_errors(run_dir, tmp_path):
    page = (run_dir / "report.html").read_text()
    probed = tmp_path / "report.html"
    probed.write_text(page.replace("</body>", PROBE))
    done = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    widths = json.loads(re.search(r"<title>PROBE(.*?)</title>", done.stdout).group(1))
    assert len(widths) == len(embedded_images(page)) == 4
    assert all(w > 100 for w in widths), widths  # every image decoded


def test_tensorboard_and_mlflow_receive_every_epoch(run_dir):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("distill/loss")] == [1, 2, 3]
    assert "evaluate/student/top1" in events.Tags()["scalars"]

    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    run = client.get_run((run_dir / "mlflow_run_id").read_text().strip())
    assert run.info.status == "FINISHED" and run.data.params["train.lr"] == "0.01"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "teach/val_acc")] == [1, 2]
    assert run.data.metrics["evaluate/student/top1"] == pytest.approx(
        json.loads((run_dir / "results.json").read_text())["models"]["student"]["top1"])


def test_wandb_offline_run_holds_every_stage_and_the_evaluation(run_dir):
    # The offline run is a protobuf log: the metric names of each stage and of the evaluation are in it as text.
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    (log,) = (run_dir / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")  # what `wandb sync` takes
    data = log.read_bytes()
    for key in (b"teach/val_acc", b"distill/loss", b"alone/train_acc", b"evaluate/student/top1", b"train.lr"):
        assert key in data, key


CROWDED = {  # three students at the same size and nearly the same accuracy, long labels
    "teacher": {"label": "teacher", "top1": 0.997, "f1": 0.997, "bytes": 303_000, "latency_ms": 0.219},
    "student": {"label": "student (distilled)", "top1": 0.9805, "f1": 0.98, "bytes": 11_800, "latency_ms": 0.026},
    "alone": {"label": "student (alone)", "top1": 0.9795, "f1": 0.979, "bytes": 11_800, "latency_ms": 0.027},
    "finetuned": {"label": "student (finetuned)", "top1": 0.981, "f1": 0.98, "bytes": 11_800, "latency_ms": 0.026},
    "int8": {"label": "student (int8, dynamic quantization)", "top1": 0.978, "f1": 0.977, "bytes": 4_000,
             "latency_ms": 0.03},
    "pruned": {"label": "student (pruned 50%)", "top1": 0.975, "f1": 0.974, "bytes": 11_800, "latency_ms": 0.026},
}


def test_scatter_labels_name_every_model_overlap_nothing_and_stay_on_the_page():
    fig, boxes = tradeoff_figure({"models": CROWDED})
    for ax in fig.axes:
        written = "\n".join(t.get_text() for t in ax.texts)
        assert all(m["label"] in written for m in CROWDED.values())
    assert all(not a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a is not b)
    page = fig.bbox
    assert all(page.x0 <= b.x0 and b.x1 <= page.x1 and page.y0 <= b.y0 and b.y1 <= page.y1 for b in boxes)


def test_bars_start_at_zero_and_show_every_label_in_full():
    fig = bars_figure({"models": CROWDED})
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        assert ax.get_xlim()[0] == 0 and "from 0" in ax.get_title()
    ticks = fig.axes[0].get_yticklabels()
    assert [t.get_text() for t in ticks] == [m["label"] for m in CROWDED.values()]
    assert all(fig.bbox.x0 <= t.get_window_extent(renderer).x0 for t in ticks)  # not cut at the left edge


def test_the_table_and_gains_name_the_batches_the_run_measured_at():
    models = {role: {**m, "params": 10, "ece": 0.1, "throughput": 100.0} for role, m in CROWDED.items()}
    results = {"models": models, "latency_batch": 4, "throughput_batch": 16}
    header = render_text(results).splitlines()[0]
    assert "latency b=4" in header and "thrpt b=16" in header and "b=256" not in header
    assert "at batch 4" in render_gains(gains(results))[-1] and "at batch 16" in render_gains(gains(results))[-1]
    assert "thrpt b=256" in render_text({"models": models})  # results.json of older runs: the defaults


def test_log_axes_label_their_ticks_even_within_one_decade():
    close = {role: {**m, "latency_ms": 0.026 + 0.0002 * k} for k, (role, m) in enumerate(CROWDED.items())}
    fig, _ = tradeoff_figure({"models": close})
    fig.canvas.draw()
    for ax in fig.axes:
        low, high = ax.get_xlim()
        shown = [t.get_text() for t in ax.get_xticklabels() if t.get_text() and low <= t.get_position()[0] <= high]
        assert len(shown) >= 2, shown
