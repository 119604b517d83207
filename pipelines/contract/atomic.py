"""Atomic writes: a file or a directory appears complete or not at all, on disk before it appears,
and never replaces what another run published meanwhile unless asked to."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import shutil
import socket
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from pipelines.contract.errors import OutputExistsError

_RENAME_EXCHANGE = 2  # renameat2's flag (Linux 3.15+): swap two paths in one step
_AT_FDCWD = -100


@contextmanager
def atomic_directory(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``target``; on success it becomes ``target``, on failure it is
    deleted. A reader never sees a half-written ``target``; its files are on disk before it
    appears. Without ``overwrite``, a ``target`` that exists at the start or that another run
    published meanwhile is an :class:`OutputExistsError`; with it, the old ``target`` is swapped
    out in one step where the system can (Linux), so that there is no moment without one. Temporary
    siblings left by runs of this machine that were killed are removed first."""
    target = target.resolve()
    if target.exists() and not overwrite:
        raise OutputExistsError(f"{target} exists; pass overwrite=true to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(target)
    tmp = target.parent / f".{target.name}.tmp-{_owner()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        sync_tree(tmp)
        if target.exists() and overwrite:
            _replace(tmp, target)
        else:
            _publish(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _sync_directory(target.parent)


def _publish(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to a ``target`` that must not exist (a non-empty one makes the rename fail:
    no other run's output is replaced, even one published after the check)."""
    taken = OutputExistsError(f"{target} was published by another run meanwhile; pass overwrite=true to replace it")
    if target.exists():
        raise taken
    try:
        os.rename(tmp, target)
    except OSError as error:
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            raise taken from None
        raise


def _replace(tmp: Path, target: Path) -> None:
    """Put ``tmp`` in the place of an existing ``target`` and delete the old one: swapped in one
    step where the system can, else moved aside first (a moment without ``target``)."""
    if _exchange(tmp, target):
        shutil.rmtree(tmp, ignore_errors=True)  # now the old target
        return
    old = target.parent / f".{target.name}.old-{_owner()}-{uuid.uuid4().hex[:8]}"
    os.rename(target, old)
    os.rename(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    system or file system cannot, having changed nothing."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # a file system without it
        return False
    raise OSError(code, os.strerror(code), str(b))


@functools.cache
def _renameat2() -> Any:
    """libc's ``renameat2`` (looked up once); None off Linux or with glibc before 2.28."""
    if not sys.platform.startswith("linux"):
        return None
    return getattr(ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True), "renameat2", None)


def _host() -> str:
    """This machine's name as temporary names carry it (no dashes: they separate the parts)."""
    return socket.gethostname().replace("-", "_")


def _owner() -> str:
    """This process, as temporary names carry it: host and process id."""
    return f"{_host()}-{os.getpid()}"


def remove_abandoned(target: Path) -> list[Path]:
    """Delete the temporary siblings of ``target`` (``.<name>.tmp-...``, ``.<name>.old-...``) that
    a process of this machine made and that no longer runs (killed mid-write); those of live
    processes and of other machines stay. Returns what it deleted."""
    host = _host()
    removed = []
    for kind in ("tmp", "old"):
        for path in target.parent.glob(f".{target.name}.{kind}-{host}-*"):
            pid = path.name[len(f".{target.name}.{kind}-{host}-") :].split("-")[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def sync_tree(directory: Path) -> None:
    """Flush every file below ``directory``, and the directories themselves, to disk."""
    for root, _, files in os.walk(directory):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _sync_directory(Path(root))


def _sync_directory(directory: Path) -> None:
    """Flush a directory's entries (a rename in it) to disk."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: Path) -> Iterator[TextIO]:
    """Yield a text file that becomes ``path`` (by rename, once on disk) when the block ends without
    error and disappears when it fails: a reader sees the old file or the new one, never part of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (``atomic_file``)."""
    with atomic_file(path) as out:
        out.write(text)
