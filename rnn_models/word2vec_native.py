"""word2vec's SGD loop in C (``word2vec_loop.c``: window by window or pair by pair), compiled on
first use and called through ctypes on CPU tensors, from several threads at once (Hogwild).

The library is built with the C compiler (``$CC``, else ``cc``) into ``$RNNMT_CACHE`` (default
``~/.cache/rnnmt``), named by a hash of the source and flags, so every process and worker reuses
one build; the build records the file's digest beside it, and a file that no longer matches it, or
a cache other users can write to, is never loaded. Compiling takes about a second.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from pipelines.contract.atomic import write_atomically
from pipelines.contract.errors import UserError

SOURCE = Path(__file__).with_name("word2vec_loop.c")
FLAGS = ["-O3", "-fPIC", "-shared", "-fopenmp-simd", "-fno-math-errno", "-std=c11"]
_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_pools: dict[int, ThreadPoolExecutor] = {}


class NativeUnavailable(UserError, RuntimeError):
    """The C loop cannot be built here (no compiler, or it failed)."""


def _build() -> Path:
    """The compiled loop in the cache: reused when it is the file this code built (its digest,
    recorded beside it at the build, matches) in a directory only this user can write; built anew
    otherwise."""
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler) is None:
        raise NativeUnavailable(
            f"no C compiler {compiler!r} on PATH to build {SOURCE.name} (install gcc, set CC, or set train.loop=tensor)"
        )
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join([compiler, platform.machine(), *FLAGS]).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("RNNMT_CACHE", Path.home() / ".cache" / "rnnmt"))
    target = cache / f"word2vec_loop-{key}.so"
    digest = target.with_suffix(".sha256")  # the built file's SHA-256, written by the build
    cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_private(cache)
    if target.is_file() and digest.is_file():
        _check_private(target)
        if digest.read_text(encoding="utf-8").strip() == _sha256(target):
            return target
    fd, tmp = tempfile.mkstemp(dir=cache, suffix=".so.tmp")
    os.close(fd)
    try:
        done = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True)
        if done.returncode != 0:
            raise NativeUnavailable(f"{compiler} could not build {SOURCE.name}:\n{done.stderr[-2000:]}")
        os.chmod(tmp, 0o755)  # whatever the umask: no one else may write it
        write_atomically(digest, _sha256(Path(tmp)) + "\n")
        os.replace(tmp, target)  # atomic: processes building at once all end with one complete file
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_private(path: Path) -> None:
    """Refuse to load code from ``path`` when another user owns it or may write to it."""
    stat = path.stat()
    if stat.st_uid != os.getuid() or stat.st_mode & 0o022:
        raise NativeUnavailable(
            f"{path} is writable by other users (or not yours): the C loop is not loaded from it; set RNNMT_CACHE "
            "to a directory only you can write (or train.loop=tensor)"
        )


def library() -> ctypes.CDLL:
    """The compiled loop (built on the first call in this process)."""
    global _library
    with _lock:
        if _library is None:
            lib = ctypes.CDLL(str(_build()))
            p, i64 = ctypes.c_void_p, ctypes.c_int64
            lib.word2vec_sgd.restype = ctypes.c_double
            lib.word2vec_sgd.argtypes = [
                p,
                p,
                p,
                p,
                i64,
                p,
                p,
                p,
                i64,
                i64,
                i64,
                p,
                i64,
                i64,
                ctypes.c_float,
                ctypes.c_int,
                ctypes.c_int,
                ctypes.c_int,
                p,
                p,
            ]
            _library = lib
    return _library


def available() -> bool:
    """Whether the loop can be built and loaded here."""
    try:
        library()
        return True
    except (NativeUnavailable, OSError):
        return False


def sgd(
    tables: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    tokens: torch.Tensor,
    sentence: torch.Tensor,
    reach: torch.Tensor,
    noise: torch.Tensor,
    noise_block: int,
    lr: float,
    nce: bool,
    cbow: bool,
    threads: int = 1,
    by_window: bool = False,
) -> tuple[float, int]:
    """Run the loop over every centre of a token stream; returns the summed loss and the number of
    terms. ``tables`` are the input and output embeddings, biases and ``log(k q)`` (float32,
    contiguous, CPU); the stream is split into ``threads`` contiguous ranges run concurrently.
    ``by_window`` updates each skip-gram centre's window as one block rather than pair by pair."""
    lib = library()
    weight_in, weight_out, bias, log_kq = tables
    for t in tables:
        if t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous():
            raise ValueError("the C loop needs contiguous float32 CPU tables")
    tokens, sentence, reach, noise = (t.to(torch.int64).contiguous() for t in (tokens, sentence, reach, noise))
    n, dim, negatives = tokens.numel(), weight_in.shape[1], noise.shape[1]
    if noise.shape[0] * noise_block < n:
        raise ValueError(f"{noise.shape[0]} noise rows for {n} centres in blocks of {noise_block}")

    widest = int(reach.max()) if n and by_window else 0
    work_size = 2 * dim + 2 * widest * (negatives + 1 + dim)

    def run(lo: int, hi: int) -> tuple[float, int]:
        work = torch.empty(work_size)
        terms = ctypes.c_int64()
        loss = lib.word2vec_sgd(
            weight_in.data_ptr(),
            weight_out.data_ptr(),
            bias.data_ptr(),
            log_kq.data_ptr(),
            dim,
            tokens.data_ptr(),
            sentence.data_ptr(),
            reach.data_ptr(),
            n,
            lo,
            hi,
            noise.data_ptr(),
            negatives,
            noise_block,
            lr,
            int(nce),
            int(cbow),
            int(by_window),
            work.data_ptr(),
            ctypes.byref(terms),
        )
        return loss, terms.value

    threads = max(1, min(threads, n))
    bounds = [n * k // threads for k in range(threads + 1)]
    if threads == 1:
        return run(0, n)
    with _lock:
        pool = _pools.setdefault(threads, ThreadPoolExecutor(threads, thread_name_prefix="word2vec"))
    parts = list(pool.map(run, bounds[:-1], bounds[1:]))  # ctypes releases the GIL during each call
    return sum(p[0] for p in parts), sum(p[1] for p in parts)
