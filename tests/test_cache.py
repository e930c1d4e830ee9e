"""The teacher-output cache: exact replay, top-k, resume of a build, corruption, staleness, augmentation views."""

import json

import numpy as np
import pytest
import torch
from cli_runner import run_cli
from torch import nn

import distil.cache as cache_module
from distil.batch import Batch
from distil.cache import CacheBuilder, open_cache, topk_to_logprobs
from distil.data import IndexedTensorDataset
from distil.data.augment import augment, view_of
from distil.errors import DistilError
from distil.methods.logits import soft_kl
from distil.recipe import AugmentConfig, CacheConfig
from distil.teachers import LiveTeacher


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(cache_module, "BLOCK_ROWS", 16)


def setup(n=50, classes=7):
    torch.manual_seed(0)
    data = IndexedTensorDataset(torch.randn(n, 1, 6, 6), torch.randint(0, classes, (n,)))
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(36, 32), nn.ReLU(), nn.Linear(32, classes))
    return data, teacher


class CountingTeacher(LiveTeacher):
    """A live teacher that counts its calls and can fail after a number of them."""

    def __init__(self, model, fail_after=None):
        super().__init__(model)
        self.calls, self.fail_after = 0, fail_after

    def outputs(self, batch):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt
        return super().outputs(batch)


def build(folder, source, data, views=1, fp="f", transform=None, **cfg):
    cfg.setdefault("batch_size", 8)
    return CacheBuilder(folder, source, data, CacheConfig(**cfg), views=views, fingerprint=fp,
                        device=torch.device("cpu"), transform=transform, quiet=True).build()


def test_fp32_cache_replays_the_teacher_exactly(tmp_path):
    data, teacher = setup()
    build(tmp_path, LiveTeacher(teacher), data, dtype="fp32")
    cached = open_cache(tmp_path, "f")
    index = torch.tensor([49, 3, 17, 3])
    batch = Batch(index, data.x[index], data.y[index])
    # equal up to float rounding: the teacher ran on batches of another size when the cache was built
    assert torch.allclose(cached.outputs(batch).logits, teacher(data.x[index]), atol=1e-6, rtol=0)


def test_fp16_is_close_and_topk_keeps_the_top_exactly(tmp_path):
    data, teacher = setup(classes=20)
    build(tmp_path / "h", LiveTeacher(teacher), data, dtype="fp16")
    build(tmp_path / "k", LiveTeacher(teacher), data, dtype="fp32", topk=5)
    batch = Batch(torch.arange(50), data.x, data.y)
    full = teacher(data.x).detach()
    assert torch.allclose(open_cache(tmp_path / "h").outputs(batch).logits, full, atol=1e-2)
    rebuilt = open_cache(tmp_path / "k").outputs(batch).logits
    logp = full.log_softmax(-1)
    top = logp.topk(5, -1)
    assert torch.allclose(rebuilt.gather(-1, top.indices), top.values, atol=1e-6)
    assert torch.allclose(rebuilt.exp().sum(-1), torch.ones(50), atol=1e-5)
    student = torch.randn(50, 20)
    assert soft_kl(student, rebuilt, 1.0).item() == pytest.approx(soft_kl(student, full, 1.0).item(), rel=0.2)


def test_topk_reconstruction_by_hand():
    logp = torch.tensor([[-0.5, -1.5]])
    full = topk_to_logprobs(logp, torch.tensor([[2, 0]]), torch.tensor([0.2]), classes=4)
    expected = torch.tensor([[-1.5, np.log(0.1), -0.5, np.log(0.1)]], dtype=torch.float32)
    assert torch.allclose(full, expected, atol=1e-6)


def test_an_interrupted_build_resumes_where_it_stopped(tmp_path):
    data, teacher = setup()
    with pytest.raises(KeyboardInterrupt):
        build(tmp_path, CountingTeacher(teacher, fail_after=5), data, dtype="fp32")  # probe + 2 blocks of 2 batches
    resumed = CountingTeacher(teacher)
    build(tmp_path, resumed, data, dtype="fp32")
    assert resumed.calls == 3  # only blocks 2 (rows 32-47: 2 batches of 8) and 3 (rows 48-49: 1 batch)
    batch = Batch(torch.arange(50), data.x, data.y)
    assert torch.allclose(open_cache(tmp_path, "f").outputs(batch).logits, teacher(data.x), atol=1e-6, rtol=0)


def test_corruption_is_detected_and_a_rebuild_repairs_only_that_block(tmp_path):
    data, teacher = setup()
    build(tmp_path, LiveTeacher(teacher), data, dtype="fp32")
    array = np.load(tmp_path / "logits.npy", mmap_mode="r+")
    array[20, 0] += 1.0
    array.flush()
    with pytest.raises(DistilError, match="block 1 fails its checksum"):
        open_cache(tmp_path, "f")
    repair = CountingTeacher(teacher)
    build(tmp_path, repair, data, dtype="fp32")
    assert repair.calls == 2  # block 1 = rows 16..31, two batches of 8
    open_cache(tmp_path, "f")


@pytest.mark.parametrize("damage", [b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'shape': (", b"garbage"])
def test_a_damaged_npy_header_is_refused_then_rebuilt(tmp_path, damage):
    data, teacher = setup()
    build(tmp_path, LiveTeacher(teacher), data, dtype="fp32")
    good = np.load(tmp_path / "logits.npy").copy()
    raw = bytearray((tmp_path / "logits.npy").read_bytes())
    raw[: len(damage)] = damage
    (tmp_path / "logits.npy").write_bytes(bytes(raw))
    with pytest.raises(DistilError, match=r"damaged \(logits.npy is missing or its header is unreadable\)"):
        open_cache(tmp_path, "f", verify=False)
    build(tmp_path, LiveTeacher(teacher), data, dtype="fp32")
    assert np.array_equal(np.load(tmp_path / "logits.npy"), good)
    open_cache(tmp_path, "f")


def test_a_stale_or_missing_cache_is_refused(tmp_path):
    data, teacher = setup()
    with pytest.raises(DistilError, match="no teacher cache"):
        open_cache(tmp_path)
    build(tmp_path, LiveTeacher(teacher), data)
    with pytest.raises(DistilError, match="fingerprint mismatch"):
        open_cache(tmp_path, "other")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["arrays"]["logits"]["crc"].pop("2")
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DistilError, match="incomplete"):
        open_cache(tmp_path, "f")


def test_each_view_replays_the_exact_augmented_input(tmp_path):
    data, teacher = setup()
    aug = AugmentConfig(crop_padding=1, flip=True, noise=0.1, views=3)
    build(tmp_path, LiveTeacher(teacher), data, views=3, dtype="fp32",
          transform=lambda b: view_of(b, b.view, aug, 7))
    cached = open_cache(tmp_path, "f")
    index = torch.tensor([5, 40, 11])
    for view in range(3):
        batch = view_of(Batch(index, data.x[index], data.y[index]), view, aug, 7)
        assert torch.allclose(cached.outputs(batch).logits, teacher(batch.x), atol=1e-6)
    assert not torch.equal(augment(data.x[index], index, 0, aug, 7), augment(data.x[index], index, 1, aug, 7))


def test_augmentation_depends_only_on_sample_and_view():
    x = torch.randn(6, 1, 5, 5)
    aug = AugmentConfig(crop_padding=2, flip=True, noise=0.5)
    whole = augment(x, torch.arange(6), 2, aug, seed=0)
    part = augment(x[[4, 1]], torch.tensor([4, 1]), 2, aug, seed=0)
    assert torch.equal(whole[[4, 1]], part) and whole.shape == x.shape
    noise = augment(torch.zeros(2000, 1, 1, 1), torch.arange(2000), 0, AugmentConfig(noise=1.0), seed=0)
    assert abs(noise.mean().item()) < 0.1 and abs(noise.std().item() - 1.0) < 0.1


def test_a_cached_run_matches_a_live_run(tiny_recipe, tmp_path, capsys):
    args = ["--set", "distill.baseline=false", "-q", "--set", "data.augment.flip=true", "--set",
            "data.augment.views=2"]
    assert run_cli(["run", tiny_recipe, "--runs-dir", tmp_path / "live", *args], capsys)[0] == 0
    code, _, err = run_cli(["cache", tiny_recipe, "--runs-dir", tmp_path / "none", *args], capsys)
    assert code == 2 and "no cache section" in err
    cached = ["--runs-dir", tmp_path / "cached", *args, "--set", "cache.dtype=fp32"]
    code, out, err = run_cli(["cache", tiny_recipe, *cached], capsys)
    assert code == 0, err
    code, _, err = run_cli(["run", tiny_recipe, "--resume", *cached], capsys)
    assert code == 0, err
    live = json.loads((tmp_path / "live/tiny/results.json").read_text())["models"]["student"]
    cached = json.loads((tmp_path / "cached/tiny/results.json").read_text())["models"]["student"]
    assert cached["top1"] == pytest.approx(live["top1"], abs=0.02)
    assert cached["agreement"] == pytest.approx(live["agreement"], abs=0.02)
    manifest = json.loads((tmp_path / "cached/tiny/cache/manifest.json").read_text())
    assert manifest["views"] == 2 and manifest["samples"] == 210


def test_a_cache_given_by_path_from_another_teacher_is_refused(tiny_recipe, tmp_path, capsys):
    folder = tmp_path / "shared-cache"
    base = ["--set", f"cache={{path: {folder}}}", "-q"]
    assert run_cli(["cache", tiny_recipe, "--runs-dir", tmp_path / "a", *base], capsys)[0] == 0
    code, _, err = run_cli(["run", tiny_recipe, "--runs-dir", tmp_path / "b", *base, "--set", "seed=5"], capsys)
    assert code == 2 and "fingerprint mismatch" in err


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_a_cache_far_larger_than_what_is_read_stays_on_disk(tmp_path):
    # 1M samples x 1000 classes in fp16 = 2 GB of logits (a sparse file here); reading batches maps only their rows
    samples, classes = 1_000_000, 1000
    logits = np.lib.format.open_memmap(tmp_path / "logits.npy", mode="w+", dtype=np.float16, shape=(samples, classes))
    rows = np.random.default_rng(0).choice(samples, size=20 * 256, replace=False)
    logits[rows] = (rows % 997)[:, None].astype(np.float16)
    logits.flush()
    del logits
    layout = cache_module.CacheLayout("f", samples, 1, "fp16", None,
                                      {"logits": {"shape": [samples, classes], "dtype": "float16", "crc": {}}}, {})
    cache = cache_module.TeacherCache(tmp_path, layout)
    before = _resident_bytes()
    for chunk in rows.reshape(20, 256):
        index = torch.from_numpy(chunk)
        out = cache.outputs(Batch(index, torch.zeros(256, 1), torch.zeros(256, dtype=torch.long)))
        assert out.logits.shape == (256, classes)
        assert torch.equal(out.logits[:, 0], torch.from_numpy(chunk % 997).float())
    assert _resident_bytes() - before < 500 * 2**20  # far below the 2 GB the whole cache would take
