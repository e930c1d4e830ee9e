"""The shipped Fashion-MNIST recipe end to end on a few hundred real images (Debian's dataset-fashion-mnist)."""

import pytest

import distil
from distil.data.fashion_mnist import DEFAULT_DIR
from distil.recipe import builtin_recipe_path

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not DEFAULT_DIR.exists(), reason="dataset-fashion-mnist is not installed (make test installs "
                       "it when run as root)"),
]


def test_fashion_mnist_recipe_distills_a_resnet_into_a_smaller_mobilenet(tmp_path):
    result = distil.run(str(builtin_recipe_path("fashion_mnist.yaml")), runs_dir=str(tmp_path / "runs"), quiet=True,
                        overrides=["data.limit=700", "teacher.epochs=2", "train.epochs=2", "train.batch_size=32",
                                   "eval.latency_repeats=3", "eval.throughput_batch=16"])
    models = result.results["models"]
    assert models["teacher"]["params"] > 1.5 * models["student"]["params"]
    assert models["teacher"]["top1"] > 0.3 and models["student"]["top1"] > 0.3  # chance is 0.1
    assert result.results["test_samples"] == 100  # 700 samples in the dataset's 6:1 train : test proportion
    assert (result.run_dir / "report.html").exists()
