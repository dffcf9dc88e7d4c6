"""What ``hivepipe up`` runs, for ``hivepipe status``: ``{HIVEPIPE_DATA_DIR}/processes.json``.

The supervisor rewrites the file (atomically) whenever a process of its tree changes: started,
exited, restarted, crash-looping; and removes it when it stops. Another process reads it with
:func:`read_table`; a table whose supervisor is gone (killed -9: the file stays) says so
(:attr:`ProcessTable.running`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from services.entrypoints.supervised import Supervised

PROCESSES_FILE = "processes.json"


@dataclass(frozen=True, slots=True)
class ProcessRow:
    """One process of the tree: ``pid`` None while its restart is pending; ``metrics_port``
    where it serves its Prometheus metrics, if it does on a port of its own."""

    name: str
    role: str
    pid: int | None
    restarts: int
    crash_looping: bool
    metrics_port: int | None = None


@dataclass(frozen=True, slots=True)
class ProcessTable:
    """The tree of one ``hivepipe up``: its supervisor's pid, when it started (Unix time), its
    processes, and whether the supervisor still runs."""

    supervisor_pid: int
    started: float
    processes: tuple[ProcessRow, ...]
    running: bool = True


def process_rows(children: Iterable[Supervised]) -> tuple[ProcessRow, ...]:
    """The rows of ``children`` as they are now."""
    return tuple(
        ProcessRow(
            child.name,
            child.role,
            child.process.pid if child.process is not None else None,
            child.restarts,
            child.crash_looping,
            child.metrics_port,
        )
        for child in children
    )


class ProcessTableFile:
    """The supervisor's side: :meth:`update` in its loop, :meth:`remove` when it stops."""

    def __init__(self, data_dir: Path, *, started: float | None = None) -> None:
        self.path = data_dir / PROCESSES_FILE
        self.started = time.time() if started is None else started
        self._written: tuple[ProcessRow, ...] | None = None

    def update(self, children: Iterable[Supervised]) -> None:
        """Write the table when a row changed since the last write (never fails the loop)."""
        rows = process_rows(children)
        if rows == self._written:
            return
        table = {
            "supervisor_pid": os.getpid(),
            "started": self.started,
            "processes": [asdict(row) for row in rows],
        }
        partial = self.path.with_suffix(".tmp")
        try:
            partial.write_text(json.dumps(table, indent=1))
            partial.replace(self.path)
        except OSError:
            return
        self._written = rows

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_table(data_dir: Path) -> ProcessTable | None:
    """The table of the ``hivepipe up`` of ``data_dir``; None when none runs or ran there."""
    try:
        raw = json.loads((data_dir / PROCESSES_FILE).read_text())
        pid = int(raw["supervisor_pid"])
        rows = tuple(ProcessRow(**row) for row in raw["processes"])
        started = float(raw["started"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return ProcessTable(pid, started, rows, running=_alive(pid))
