"""services.platform.runtime: start-up objects leave the collector's way; every pause is
measured."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator

import pytest

from services.platform import runtime


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def _collections(generation: int) -> float:
    return sum(
        sample.value
        for metric in runtime.GC_PAUSE.collect()
        for sample in metric.samples
        if sample.name.endswith("_count") and sample.labels["generation"] == str(generation)
    )


def test_settle_heap_freezes_what_exists(unfrozen: None) -> None:
    kept = [[i] for i in range(1000)]  # tracked containers alive at "start-up"
    frozen = runtime.settle_heap()
    assert frozen == gc.get_freeze_count()
    assert frozen >= len(kept)
    # Frozen objects are in no generation the collector scans any more.
    scanned = {id(o) for o in gc.get_objects()}
    assert not any(id(x) in scanned for x in kept)


def test_settled_objects_are_still_freed_by_reference_counting(unfrozen: None) -> None:
    import weakref

    class Thing:
        pass

    thing = Thing()
    ref = weakref.ref(thing)
    runtime.settle_heap()
    del thing
    assert ref() is None


def test_every_collection_pause_is_observed() -> None:
    runtime.observe_gc()
    runtime.observe_gc()  # idempotent: one callback
    assert gc.callbacks.count(runtime._on_gc) == 1
    before = _collections(2)
    gc.collect()
    assert _collections(2) == before + 1


def test_niced_prefixes_the_command_with_nice() -> None:
    import shutil

    assert runtime.niced(["tansu", "broker"], 0) == ["tansu", "broker"]
    nice = shutil.which("nice")
    assert nice is not None  # coreutils
    assert runtime.niced(["tansu", "broker"], 5) == [nice, "-n", "5", "tansu", "broker"]


def test_a_niced_command_runs_at_the_lower_priority() -> None:
    import subprocess
    import sys

    code = "import os; print(os.getpriority(os.PRIO_PROCESS, 0))"
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    out = subprocess.run(
        runtime.niced([sys.executable, "-c", code], 3), capture_output=True, text=True, check=True
    )
    assert int(out.stdout) == min(mine + 3, 19)


def test_lower_priority_lowers_this_process_only_by_the_amount_asked() -> None:
    import subprocess
    import sys

    code = (
        "import os; from services.platform.runtime import lower_priority; "
        "before = os.getpriority(os.PRIO_PROCESS, 0); lower_priority(4); lower_priority(0); "
        "print(before, os.getpriority(os.PRIO_PROCESS, 0))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = map(int, out.stdout.split())
    assert after == min(before + 4, 19)
