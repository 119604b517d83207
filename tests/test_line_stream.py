"""Reading lines strictly and mapping a file to another chunk by chunk."""

from __future__ import annotations

import pytest

from jobs.common.line_stream import count_lines, map_lines, read_lines
from pipelines.contract.errors import InputError


def test_lines_end_with_lf_or_crlf_and_the_last_may_lack_one():
    assert read_lines(b"a\r\nb\n\nc", "x") == ["a", "b", "", "c"]
    assert read_lines(b"a\n", "x") == ["a"] and read_lines(b"", "x") == []
    with pytest.raises(InputError, match="x: line 2 is not valid UTF-8"):
        read_lines(b"ok\n\xff\n", "x")


def test_count_lines(tmp_path):
    for data, lines in ((b"", 0), (b"a", 1), (b"a\n", 1), (b"a\n\nb", 3), (b"x\n" * 300_000, 300_000)):
        (tmp_path / "f").write_bytes(data)
        assert count_lines(tmp_path / "f") == lines == len(read_lines(data, "f"))


def test_map_lines_in_chunks_keeps_order_and_writes_atomically(tmp_path):
    src, out = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_text("".join(f"{i}\n" for i in range(25)), encoding="utf-8")
    sizes = []

    def double(chunk: list[str]) -> list[str]:
        sizes.append(len(chunk))
        return [str(2 * int(line)) for line in chunk]

    stats = map_lines(src, out, 10, double, progress=False)
    assert out.read_text(encoding="utf-8").split() == [str(2 * i) for i in range(25)]
    assert sizes == [10, 10, 5] and stats.lines == 25
    src.write_bytes(b"1\n2\n" * 10 + b"\xff\n")  # a bad line after two chunks: no output file at all
    out.unlink()
    with pytest.raises(InputError, match="line 21 is not valid UTF-8"):
        map_lines(src, out, 10, double, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]
