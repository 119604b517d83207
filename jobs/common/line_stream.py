"""Line-per-line text in and out of ``jobs.translate`` and ``jobs.classify``: read, processed and
written in chunks, so memory stays bounded whatever the input's length."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import BinaryIO

from jobs.common import progress as progress_bars
from jobs.common.job_output import data_stdout
from pipelines.contract.atomic import atomic_file
from pipelines.contract.errors import InputError


def iter_lines(stream: BinaryIO, name: str) -> Iterator[str]:
    """Lines of ``stream`` (``\\n`` or ``\\r\\n`` ends), decoded strictly; InputError names the first bad line."""
    for number, raw in enumerate(stream, 1):
        try:
            yield raw.removesuffix(b"\n").removesuffix(b"\r").decode("utf-8")
        except UnicodeDecodeError as err:
            raise InputError(f"{name}: line {number} is not valid UTF-8 ({err.reason} at byte {err.start})") from None


def read_lines(data: bytes, name: str) -> list[str]:
    """All lines of ``data`` (``iter_lines``)."""
    return list(iter_lines(io.BytesIO(data), name))


def count_lines(path: Path) -> int:
    """Lines in a file (a last line without its newline counts), read in blocks."""
    count, last = 0, b"\n"
    with path.open("rb") as stream:
        while block := stream.read(1 << 20):
            count, last = count + block.count(b"\n"), block[-1:]
    return count + (last != b"\n")


def check_input(path: Path | None) -> None:
    """InputError unless ``path`` (None: stdin) is a file: before a model is loaded for it."""
    if path is not None and not path.is_file():
        raise InputError(f"--input {path}: no such file")


@dataclass
class StreamStats:
    lines: int
    seconds: float

    @property
    def lines_per_sec(self) -> float:
        return self.lines / self.seconds if self.seconds > 0 else 0.0


def map_lines(
    input_path: Path | None,
    output_path: Path | None,
    chunk_lines: int,
    process: Callable[[list[str]], list[str]],
    progress: bool | None = True,
    desc: str = "lines",
) -> StreamStats:
    """Read lines from ``input_path`` (None: stdin), turn each chunk of ``chunk_lines`` into as many
    output lines with ``process``, and write them to ``output_path`` (None: stdout) as they come.
    ``output_path`` is written atomically: on any error (bad UTF-8 on line N included) it is not
    created; on stdout the chunks before the error have been written."""
    check_input(input_path)
    name = str(input_path) if input_path else "<stdin>"
    total = count_lines(input_path) if input_path is not None and progress_bars.shown(progress) else None
    start, done = time.perf_counter(), 0
    with ExitStack() as stack:
        source = stack.enter_context(input_path.open("rb")) if input_path else sys.stdin.buffer
        out = stack.enter_context(atomic_file(output_path)) if output_path else data_stdout()
        bar = stack.enter_context(progress_bars.bar(progress, total=total, desc=desc, unit=" lines"))
        lines = iter_lines(source, name)
        while chunk := list(islice(lines, chunk_lines)):
            results = process(chunk)
            out.write("".join(line + "\n" for line in results))
            out.flush()
            done += len(chunk)
            bar.update(len(chunk))
    return StreamStats(done, time.perf_counter() - start)
