"""services.entrypoints.embedded: what the embedded servers need of the machine."""

from __future__ import annotations

from pathlib import Path


def test_the_postgres_binaries_folder_is_made_traversable_and_no_more(tmp_path: Path) -> None:
    """Under root the embedded PostgreSQL runs as its own user, which must reach the virtualenv's
    binaries even in a clone only root may enter (``mktemp -d``, a home directory)."""
    import stat

    from services.entrypoints.embedded import _allow_traversal

    closed = tmp_path / "clone"
    binary = closed / "venv" / "bin" / "initdb"
    binary.parent.mkdir(parents=True)
    binary.touch()
    for folder in (closed, closed / "venv"):
        folder.chmod(0o700)
    _allow_traversal(binary)
    for folder in (closed, closed / "venv"):
        mode = stat.S_IMODE(folder.stat().st_mode)
        assert mode == 0o711  # traverse only: listing stays root's
