"""Atomic outputs: two runs on one output directory, an overwrite watched by another process, and
the leftovers of a run killed mid-write."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.contract.atomic import atomic_directory, atomic_file
from pipelines.contract.errors import OutputExistsError


def _publish(target: Path, text: str, overwrite: bool = False) -> None:
    with atomic_directory(target, overwrite=overwrite) as tmp:
        (tmp / "model.txt").write_text(text, encoding="utf-8")


def test_a_second_run_on_one_output_fails_instead_of_replacing_the_first(tmp_path):
    target = tmp_path / "out"
    first, second = atomic_directory(target), atomic_directory(target)
    one, two = first.__enter__(), second.__enter__()  # both start while there is no output yet
    (one / "model.txt").write_text("first", encoding="utf-8")
    (two / "model.txt").write_text("second", encoding="utf-8")
    first.__exit__(None, None, None)
    with pytest.raises(OutputExistsError, match="published by another run meanwhile; pass overwrite=true"):
        second.__exit__(None, None, None)
    assert (target / "model.txt").read_text(encoding="utf-8") == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the refused run's temporary directory is gone
    with pytest.raises(OutputExistsError, match="exists; pass overwrite=true"):
        _publish(target, "third")
    _publish(target, "fourth", overwrite=True)
    assert (target / "model.txt").read_text(encoding="utf-8") == "fourth"


def _watch(target: str, seconds: float, result: multiprocessing.Queue) -> None:
    """Look for ``target``'s file as fast as possible; put (looks, misses)."""
    path, looks, misses = os.path.join(target, "model.txt"), 0, 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        looks += 1
        misses += not os.path.exists(path)
    result.put((looks, misses))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="an atomic swap of directories needs Linux")
def test_an_overwrite_leaves_no_moment_without_the_output(tmp_path):
    target = tmp_path / "out"
    _publish(target, "0")
    context = multiprocessing.get_context("spawn")
    result = context.Queue()
    watcher = context.Process(target=_watch, args=(str(target), 6.0, result))
    watcher.start()
    time.sleep(2.0)  # the watcher has started looking
    for i in range(1, 301):
        _publish(target, str(i), overwrite=True)
    looks, misses = result.get(timeout=60)
    watcher.join()
    assert looks > 1000 and misses == 0, (looks, misses)
    assert (target / "model.txt").read_text(encoding="utf-8") == "300"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_what_a_killed_run_left_is_removed_by_the_next_and_a_live_ones_stays(tmp_path):
    target = tmp_path / "out"
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys; from pathlib import Path; from pipelines.contract.atomic import atomic_directory\n"
            "with atomic_directory(Path(sys.argv[1])) as tmp:\n"
            "    (tmp / 'half.txt').write_text('half')\n"
            "    os._exit(9)\n",
            str(target),
        ],
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert killed.returncode == 9
    (left,) = [p for p in tmp_path.iterdir()]
    assert left.name.startswith(".out.tmp-") and (left / "half.txt").exists()
    other_machine = tmp_path / ".out.tmp-elsewhere-1-abcdef12"  # a run on another host sharing the disk
    other_machine.mkdir()
    live = atomic_directory(target)
    running = live.__enter__()  # a run of this process, still writing
    _publish(tmp_path / "out", "done")
    assert not left.exists() and other_machine.exists() and running.exists()
    live.__exit__(RuntimeError, RuntimeError("stopped"), None)
    assert not running.exists()


def test_an_atomic_file_appears_whole_or_not_at_all(tmp_path):
    path = tmp_path / "report.md"
    with atomic_file(path) as out:
        out.write("one")
    with pytest.raises(RuntimeError), atomic_file(path) as out:
        out.write("two, half")
        raise RuntimeError("stopped")
    assert path.read_text(encoding="utf-8") == "one" and [p.name for p in tmp_path.iterdir()] == ["report.md"]
