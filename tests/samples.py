"""The sample bodies of the wire formats, kept with the tests in ``tests/data/`` (what each one
is and what the tests expect of it: ``tests/data/README.md``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

SAMPLES = Path(__file__).resolve().parent / "data"


def sample(name: str) -> Any:
    """The JSON of sample ``name``."""
    path = SAMPLES / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such sample in tests/data")
    return orjson.loads(path.read_bytes())
