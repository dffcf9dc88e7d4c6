"""The contract's sample bodies, read from ``shared/samples`` beside the checkout (as in CI's
clone: the specs and samples are not copied into this repository)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"


def sample(name: str) -> Any:
    """The JSON of sample ``name``."""
    path = SAMPLES / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the tests need ../shared/samples beside this checkout")
    return orjson.loads(path.read_bytes())
