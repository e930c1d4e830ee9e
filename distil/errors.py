"""The one error type a user can cause: a bad recipe, a missing file, a shape that does not fit."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DistilError(Exception):
    """A problem the user can fix; its message is one sentence naming the field or file and the fix."""


def nearest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ' (did you mean a, b?)' listing the closest valid names, or '' when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    return f" (did you mean {', '.join(close)}?)" if close else ""
