"""The teacher-output cache: the teacher runs once; its outputs live in memory-mapped arrays on disk.

Layout of a cache folder: `manifest.json` plus one `.npy` file per array (`logits`, or `topk_logp` +
`topk_index` + `rest_mass`, and one per tapped feature). Each array has `views × samples` rows: row
`view * samples + index` holds the teacher's output for augmented view `view` of sample `index`. Rows are
written in blocks; each finished block's CRC32 goes into the manifest, so an interrupted build resumes at
the first missing block and a corrupt block is found (and rebuilt) when the cache is opened.

A token cache (a causal LM teacher, logits shaped (samples, positions, vocab)) has the same arrays with a
position axis, plus `spans`: the character span of each of the teacher's tokens, so a student with another
tokenizer can find which of its positions predict the same text (distil.text.align). The manifest records the
teacher's tokenizer; a cache is never read with another tokenizer or k.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from distil import distributed
from distil.batch import Batch
from distil.checkpoint import atomic_write_text
from distil.data import IndexedTensorDataset
from distil.errors import DistilError
from distil.methods.base import Outputs
from distil.recipe import CacheConfig
from distil.teachers import TeacherSource

FORMAT = "distil-cache-1"
BLOCK_ROWS = 4096
NUMPY_DTYPE = {"fp16": np.float16, "fp32": np.float32}


def fingerprint(teacher: nn.Module, dataset: IndexedTensorDataset, settings: dict) -> str:
    """SHA-256 of the teacher's weights, the training inputs and labels, and every setting that shapes outputs."""
    digest = hashlib.sha256()
    for name, tensor in teacher.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(dataset.x.contiguous().numpy().tobytes())
    digest.update(dataset.y.contiguous().numpy().tobytes())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


def same_tokens(a: str | None, b: str | None) -> bool:
    """Whether two tokenizer identities (`name (tokens)`, distil.text.tokenize) name the same tokens: the part in
    the last parentheses decides, so the same tokenizer loaded from another folder is the same."""
    def tokens(identity: str | None) -> str | None:
        return identity[identity.rfind("("):] if identity and identity.endswith(")") else identity

    return tokens(a) == tokens(b)


def _crc(array: np.ndarray, block: int, block_rows: int) -> int:
    rows = array[block * block_rows:(block + 1) * block_rows]
    return zlib.crc32(np.ascontiguousarray(rows).view(np.uint8).reshape(-1))


@dataclass
class CacheLayout:
    """What the manifest records: sizes, storage choices and which blocks are finished (with checksums)."""

    fingerprint: str
    samples: int
    views: int
    dtype: str
    topk: int | None
    arrays: dict[str, dict]
    blocks: dict[str, int]
    block_rows: int = BLOCK_ROWS
    positions: int | None = None  # token caches: positions per sample
    tokenizer: str | None = None  # token caches: the identity of the teacher's tokenizer

    @property
    def rows(self) -> int:
        """views × samples."""
        return self.samples * self.views

    @property
    def num_blocks(self) -> int:
        """Blocks per array."""
        return -(-self.rows // self.block_rows)

    @property
    def classes(self) -> int:
        """Size of the teacher's distribution (classes, or a language model's vocabulary)."""
        meta = self.arrays["logits"] if self.topk is None else self.arrays["topk_index"]
        return meta.get("classes", meta["shape"][-1])

    def to_json(self) -> str:
        """The manifest text."""
        return json.dumps({"format": FORMAT, **self.__dict__}, indent=1)


def _feature_file(path: str) -> str:
    return "feature_" + hashlib.sha1(path.encode()).hexdigest()[:12]


class TeacherCache:
    """A finished cache, read through the TeacherSource interface: `outputs(batch)` gathers rows by index and view."""

    def __init__(self, folder: Path, layout: CacheLayout, device: torch.device | None = None) -> None:
        self.folder = Path(folder)
        self.layout = layout
        self.device = device
        # copy-on-write maps are writable, so torch reads them in place (no copy, no warning); nothing writes back
        self.arrays = {name: torch.from_numpy(np.load(self.folder / f"{name}.npy", mmap_mode="c"))
                       for name in layout.arrays}
        self.feature_paths = {meta["tap"]: name for name, meta in layout.arrays.items() if "tap" in meta}

    def _rows(self, batch: Batch) -> Tensor:
        index = batch.index.cpu()
        view = batch.view % self.layout.views
        return index + view * self.layout.samples if view else index

    def _gather(self, name: str, rows: Tensor | np.ndarray, device: torch.device, width: int | None = None) -> Tensor:
        table = self.arrays[name]
        if width is not None:
            values = table[rows, :width]
        else:  # index_select: one gather, a third of advanced indexing's cost on small batches
            values = table.index_select(0, rows) if isinstance(rows, Tensor) else table[rows]
        if values.dtype == torch.uint16:  # token ids stored in 2 bytes
            values = values.to(torch.int32)
        return values if values.device == device else values.to(device, non_blocking=True)

    def outputs(self, batch: Batch) -> Outputs:
        """Teacher logits (full, or rebuilt from top-k) and features for the batch's samples and view; a token
        cache gives the batch's positions (its width)."""
        rows = self._rows(batch)
        device = batch.x.device
        width = batch.y.shape[1] if self.layout.positions is not None else None
        if self.layout.topk is None:
            logits = self._gather("logits", rows, device, width).float()
        else:
            logp, index, rest = self.topk(rows, device, width)
            logits = topk_to_logprobs(logp, index, rest, self.layout.classes)
        features = {tap: self._gather(name, rows, device).float() for tap, name in self.feature_paths.items()}
        return Outputs(logits, features)

    def topk(self, rows: Tensor | np.ndarray, device: torch.device,
             width: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The stored top-k log-probabilities, their indices and the rest's mass of these rows (top-k caches)."""
        return (self._gather("topk_logp", rows, device, width).float(),
                self._gather("topk_index", rows, device, width).long(),
                self._gather("rest_mass", rows, device, width).float())

    def spans(self, rows: Tensor | np.ndarray) -> Tensor:
        """(rows, positions, 2) character spans [start, end) of the teacher's tokens (token caches)."""
        return self.arrays["spans"][rows].long()


def topk_to_logprobs(logp: Tensor, index: Tensor, rest: Tensor, classes: int) -> Tensor:
    """Full log-probabilities from the top-k ones: the remaining mass is spread evenly over the other classes."""
    k = logp.shape[-1]
    others = (rest.clamp_min(0) / max(1, classes - k)).clamp_min(1e-30).log()
    full = others.unsqueeze(-1).expand(*logp.shape[:-1], classes).clone()
    return full.scatter(-1, index, logp)


def read_layout(folder: Path) -> CacheLayout | None:
    """The manifest of the cache in `folder`, or None when there is none (or it is unreadable)."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    if raw.pop("format", None) != FORMAT:
        return None
    return CacheLayout(**raw)


def _mapped(file: Path, meta: dict) -> np.memmap | None:
    """The .npy file memory-mapped read-only, or None when it is missing, its header is damaged or its shape and
    dtype are not the ones the manifest recorded."""
    try:
        array = np.load(file, mmap_mode="r", allow_pickle=False)
    except Exception:  # numpy's header parser raises many types (ValueError, SyntaxError, EOFError, ...)
        return None
    if list(array.shape) != list(meta["shape"]) or array.dtype.name != meta["dtype"]:
        return None
    return array


def corrupt_blocks(folder: Path, layout: CacheLayout) -> list[tuple[str, int]]:
    """(array, block) pairs whose data no longer match the checksum recorded when they were written (every block
    of an array whose file is missing or whose header is damaged)."""
    bad = []
    for name, meta in layout.arrays.items():
        array = _mapped(Path(folder) / f"{name}.npy", meta)
        if array is None:
            return [(name, b) for b in range(layout.num_blocks)]
        crcs = layout.arrays[name].get("crc", {})
        bad += [(name, int(b)) for b, crc in crcs.items() if _crc(array, int(b), layout.block_rows) != crc]
    return bad


class CacheBuilder:
    """Runs a teacher source over every (view, sample) of the training data and fills the cache, block by block.

    `tokenizer` names a causal LM teacher's tokenizer (token caches): it goes into the manifest, and the
    dataset's `spans` (character spans of its tokens) are stored beside the teacher's outputs.
    """

    def __init__(self, folder: Path, source: TeacherSource, dataset: IndexedTensorDataset, cfg: CacheConfig, *,
                 views: int, fingerprint: str, device: torch.device,
                 transform: Callable[[Batch], Batch] | None = None, quiet: bool = False,
                 tokenizer: str | None = None) -> None:
        self.folder = Path(folder)
        self.source, self.dataset, self.cfg = source, dataset, cfg
        self.views, self.fingerprint, self.device = views, fingerprint, device
        self.transform = transform or (lambda b: b)
        self.quiet = quiet
        self.tokenizer = tokenizer

    def _batch(self, view: int, rows: range) -> Batch:
        index = torch.arange(rows.start, rows.stop)
        if hasattr(self.dataset, "batch"):  # a dataset that pads its own batches (text)
            batch = self.dataset.batch(index)
            batch = Batch(batch.index, batch.x, batch.y, view)
        else:
            batch = Batch(index, self.dataset.x[index], self.dataset.y[index], view)
        return self.transform(batch.to(self.device))

    def _outputs(self, view: int, rows: range) -> Outputs:
        return self.source.outputs(self._batch(view, rows))

    def _allocate(self) -> CacheLayout:
        probe = self._outputs(0, range(0, min(2, len(self.dataset))))
        rows = len(self.dataset) * self.views
        dtype = NUMPY_DTYPE[self.cfg.dtype]
        classes = probe.logits.shape[-1]
        positions = self.dataset.x.shape[1] if probe.logits.dim() == 3 else None
        lead = (rows,) if positions is None else (rows, positions)
        if self.cfg.topk is None:
            specs = {"logits": ((*lead, classes), dtype, {})}
        else:
            if self.cfg.topk >= classes:
                raise DistilError(f"cache.topk: {self.cfg.topk} is not below the {classes} classes; lower it or "
                                  "set it to null to keep full logits.")
            k = self.cfg.topk
            index_dtype = np.uint16 if classes <= np.iinfo(np.uint16).max + 1 else np.int32  # 2 bytes a token id
            specs = {"topk_logp": ((*lead, k), dtype, {}),
                     "topk_index": ((*lead, k), index_dtype, {"classes": classes}),
                     "rest_mass": (lead, np.float32, {})}
        if positions is not None and getattr(self.dataset, "spans", None) is not None:
            specs["spans"] = ((rows, positions, 2), np.int32, {})
        for tap, feature in probe.features.items():
            specs[_feature_file(tap)] = ((rows, *feature.shape[1:]), dtype, {"tap": tap})
        self.folder.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for name, (shape, np_dtype, extra) in specs.items():
            np.lib.format.open_memmap(self.folder / f"{name}.npy", mode="w+", dtype=np_dtype, shape=shape).flush()
            arrays[name] = {"shape": list(shape), "dtype": np.dtype(np_dtype).name, "crc": {}, **extra}
        block_rows = BLOCK_ROWS if positions is None else max(1, BLOCK_ROWS // positions)
        layout = CacheLayout(self.fingerprint, len(self.dataset), self.views, self.cfg.dtype, self.cfg.topk,
                             arrays, {}, block_rows=block_rows, positions=positions, tokenizer=self.tokenizer)
        atomic_write_text(self.folder / "manifest.json", layout.to_json())
        return layout

    def _stale(self, layout: CacheLayout | None) -> bool:
        return layout is None or layout.fingerprint != self.fingerprint or layout.views != self.views \
            or layout.dtype != self.cfg.dtype or layout.topk != self.cfg.topk \
            or not same_tokens(layout.tokenizer, self.tokenizer) \
            or any(_mapped(self.folder / f"{name}.npy", meta) is None for name, meta in layout.arrays.items())

    def build(self) -> CacheLayout:
        """Fill every missing or corrupt block (all of them for a new or stale cache) and return the layout.

        Under torchrun the blocks are shared out by rank; rank 0 allocates the files and writes the manifest.
        """
        layout = read_layout(self.folder)
        distributed.barrier()  # every rank has read the old manifest before rank 0 replaces it
        if self._stale(layout):
            if distributed.is_main():
                self._allocate()
            distributed.barrier()
            layout = read_layout(self.folder)
        bad = corrupt_blocks(self.folder, layout) if distributed.is_main() else None
        for name, block in distributed.broadcast_object(bad):
            layout.arrays[name]["crc"].pop(str(block), None)
        todo = [b for b in range(layout.num_blocks)
                if any(str(b) not in meta["crc"] for meta in layout.arrays.values())]
        rank, world = distributed.shard()
        arrays = {name: np.load(self.folder / f"{name}.npy", mmap_mode="r+") for name in layout.arrays}
        hide = True if self.quiet or not distributed.is_main() else None
        for block in tqdm(todo[rank::world], desc="cache", disable=hide, leave=True, unit="block"):
            self._fill_block(layout, arrays, block)
            atomic_write_text(self.folder / "manifest.json", layout.to_json())
        for part in distributed.all_gather_object({name: meta["crc"] for name, meta in layout.arrays.items()}):
            for name, crcs in part.items():
                layout.arrays[name]["crc"].update(crcs)
        atomic_write_text(self.folder / "manifest.json", layout.to_json())
        distributed.barrier()  # the finished manifest is on disk for every rank
        return layout

    def _fill_block(self, layout: CacheLayout, arrays: dict[str, np.memmap], block: int) -> None:
        start, stop = block * layout.block_rows, min((block + 1) * layout.block_rows, layout.rows)
        row = start
        while row < stop:
            view, first = divmod(row, layout.samples)
            last = min(first + self.cfg.batch_size, layout.samples, first + stop - row)
            out = self._outputs(view, range(first, last))
            for name, values in self._encode(out, layout).items():
                arrays[name][row:row + last - first] = values
            if "spans" in arrays:
                arrays["spans"][row:row + last - first] = self.dataset.spans[first:last].numpy()
            row += last - first
        for name, array in arrays.items():
            array.flush()
            layout.arrays[name]["crc"][str(block)] = _crc(array, block, layout.block_rows)

    def _encode(self, out: Outputs, layout: CacheLayout) -> dict[str, np.ndarray]:
        dtype = NUMPY_DTYPE[layout.dtype]
        logits = out.logits.float()
        if layout.positions is not None:  # a batch is as wide as its longest sample; the cache holds every position
            logits = F.pad(logits, (0, 0, 0, layout.positions - logits.shape[1]))
        if layout.topk is None:
            encoded = {"logits": logits.cpu().numpy().astype(dtype)}
        else:
            logp = torch.log_softmax(logits, dim=-1)
            values, index = logp.topk(layout.topk, dim=-1)
            rest = (1 - values.exp().sum(-1)).clamp_min(0)
            encoded = {"topk_logp": values.cpu().numpy().astype(dtype),
                       "topk_index": index.cpu().numpy().astype(layout.arrays["topk_index"]["dtype"]),
                       "rest_mass": rest.cpu().numpy()}
        for tap, feature in out.features.items():
            encoded[_feature_file(tap)] = feature.float().cpu().numpy().astype(dtype)
        return encoded


def open_cache(folder: Path, expected_fingerprint: str | None = None, verify: bool = True, *,
               tokenizer: str | None = None, topk: int | None | bool = False) -> TeacherCache:
    """Open a finished cache; a missing, stale, incomplete or corrupt one is a DistilError saying how to rebuild.

    `tokenizer` (token caches) and `topk` (None: full logits; False: not checked) are what the reader expects;
    a cache built with another tokenizer or k is refused by name before the fingerprint is compared."""
    folder = Path(folder)
    layout = read_layout(folder)
    rebuild = f"rebuild it with `distil cache RECIPE` or delete {folder}"
    if layout is None:
        raise DistilError(f"{folder} holds no teacher cache (no readable manifest.json); {rebuild}.")
    if tokenizer is not None and not same_tokens(layout.tokenizer, tokenizer):
        raise DistilError(f"the teacher cache in {folder} was built with the tokenizer {layout.tokenizer}, but this "
                          f"teacher's tokenizer is {tokenizer}; {rebuild}, or point cache.path elsewhere.")
    if topk is not False and layout.topk != topk:
        def kept(k: int | None) -> str:
            return "full logits" if k is None else f"the top {k}"
        raise DistilError(f"the teacher cache in {folder} keeps {kept(layout.topk)} per position but cache.topk asks "
                          f"for {kept(topk)}; {rebuild}, or set cache.topk: {layout.topk}.")
    if expected_fingerprint is not None and layout.fingerprint != expected_fingerprint:
        raise DistilError(f"the teacher cache in {folder} was built from another teacher, data or settings "
                          f"(fingerprint mismatch); {rebuild}.")
    missing = [n for n, meta in layout.arrays.items() if len(meta["crc"]) < layout.num_blocks]
    if missing:
        raise DistilError(f"the teacher cache in {folder} is incomplete ({missing[0]}); {rebuild}.")
    damaged = [n for n, meta in layout.arrays.items() if _mapped(folder / f"{n}.npy", meta) is None]
    if damaged:
        raise DistilError(f"the teacher cache in {folder} is damaged ({damaged[0]}.npy is missing or its header is "
                          f"unreadable); {rebuild}.")
    if verify:
        bad = corrupt_blocks(folder, layout)
        if bad:
            name, block = bad[0]
            raise DistilError(f"the teacher cache in {folder} is corrupt ({name}.npy block {block} fails its "
                              f"checksum); {rebuild}.")
    return TeacherCache(folder, layout)

