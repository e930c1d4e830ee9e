"""Built-in datasets (digits, mnist1d, fashion_mnist, synthetic, npz, csv, text) as indexed train/val/test splits."""

from distil.data import csv_file, digits, fashion_mnist, mnist1d, npz_file, synthetic  # noqa: F401  (registers them)
from distil.data.indexed import IndexedDataset, IndexedTensorDataset, as_indexed
from distil.data.registry import available_datasets
from distil.data.splits import Splits, load_dataset

__all__ = ["IndexedDataset", "IndexedTensorDataset", "Splits", "as_indexed", "available_datasets", "load_dataset"]
