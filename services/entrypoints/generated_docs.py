"""What the generators of checked-in documents share: write the document, or with ``--check``
only say whether the checked-in one is out of date (``make docs``; the tests call ``render``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def write_or_check(output: Path, text: str, argv: Sequence[str], *, wrote: str) -> int:
    """Write ``text`` to ``output`` (and print ``wrote``), or with ``--check`` in ``argv``
    compare them: 1 when the file differs, else 0."""
    name = output.relative_to(ROOT)
    if "--check" in argv:
        current = output.read_text(encoding="utf-8") if output.exists() else ""
        if current != text:
            print(f"{name} is out of date: run `make docs`", file=sys.stderr)
            return 1
        return 0
    output.write_text(text, encoding="utf-8")
    print(f"wrote {name} ({wrote})")
    return 0
