"""The "tokenizer" preprocessing kind: raw strings in, token ids and attention masks out, with the run's tokenizer
(a reference to its local folder, checked against the tokens it had when the model trained)."""

from __future__ import annotations

import numpy as np

from distil.errors import DistilError
from distil.preprocess import Batch, InputError, Preprocessor, register_kind
from distil.text.tokenize import encode, load_tokenizer, tokenizer_identity

EXAMPLE_CHARS = 300  # the example text in a model file is cut to this many characters


def tokenizer_spec(folder: str, tokenizer, max_length: int, example: str | None) -> dict:
    """The "tokenizer" spec of a text loader: the folder, its identity, the length kept and an example text."""
    return {"kind": "tokenizer", "folder": str(folder), "identity": tokenizer_identity(tokenizer),
            "max_length": int(max_length), "example": (example or "")[:EXAMPLE_CHARS]}


@register_kind("tokenizer")
class Tokenize(Preprocessor):
    """Strings tokenized as in training: truncated to max_length tokens, padded to the longest of the batch."""

    def __init__(self, spec: dict, input_shape: tuple[int, ...]) -> None:
        super().__init__(spec, input_shape)
        folder = spec.get("folder")
        if not isinstance(folder, str):
            raise DistilError("model file: its 'tokenizer' preprocessing names no tokenizer folder; use an intact "
                              "model file from a run folder.")
        self.tokenizer = load_tokenizer(folder, "model file: preprocess.folder (the run's tokenizer)")
        if spec.get("identity") and tokenizer_identity(self.tokenizer) != spec["identity"]:
            raise DistilError(f"model file: the tokenizer in {folder} is not the one the model was trained with "
                              f"({spec['identity']}); restore that tokenizer folder.")
        self.max_length = int(spec.get("max_length") or input_shape[0])
        self.pad_id = int(self.tokenizer.pad_token_id)

    def describe(self) -> dict:
        """One raw text string, and how the server tokenizes it."""
        return {"kind": self.kind, "type": "string", "max_length": self.max_length,
                "tokenizer": self.spec.get("identity", self.spec["folder"]),
                "preprocessing": f"send raw text strings; the server tokenizes each with the run's tokenizer and "
                                 f"keeps its first {self.max_length} tokens"}

    def example(self) -> str:
        """A training text the loader recorded."""
        return self.spec.get("example") or "an example text"

    def encode(self, items: list) -> Batch:
        """Right-padded ids and attention masks of the strings."""
        if not all(isinstance(item, str) for item in items):
            raise InputError("each input must be a text string (this model reads raw text).")
        ids, lengths = encode(self.tokenizer, items, self.max_length)
        mask = (np.arange(ids.shape[1])[None, :] < lengths.numpy()[:, None]).astype(np.int64)
        return {"input_ids": ids.numpy(), "attention_mask": mask}

    def collate(self, batches: list[Batch]) -> Batch:
        """The batches padded to the longest and stacked."""
        if len(batches) == 1:
            return batches[0]
        width = max(b["input_ids"].shape[1] for b in batches)
        ids = np.concatenate([np.pad(b["input_ids"], ((0, 0), (0, width - b["input_ids"].shape[1])),
                                     constant_values=self.pad_id) for b in batches])
        mask = np.concatenate([np.pad(b["attention_mask"], ((0, 0), (0, width - b["attention_mask"].shape[1])))
                               for b in batches])
        return {"input_ids": ids, "attention_mask": mask}
