"""Shared fixtures: a tiny recipe that runs every stage in seconds."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # test helper modules (python: model factories)

from threads import one_torch_thread  # noqa: E402  (a helper module on the path just added)

TINY_RECIPE = """\
name: tiny
seed: 1
data: {name: digits, limit: 300}
teacher: {name: mlp, hidden: [32], epochs: 2}
student: {name: mlp, hidden: [8]}
train: {epochs: 3, batch_size: 32, lr: 0.01}
eval: {latency_repeats: 3, throughput_batch: 16}
"""


@pytest.fixture
def one_thread():
    """One torch thread for the test (modules opt in with pytestmark = pytest.mark.usefixtures("one_thread"))."""
    with one_torch_thread():
        yield


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    """A recipe file for a whole run on 300 digits with tiny MLPs."""
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_RECIPE)
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DISTIL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "distil-cache"))
