"""Word vectors in word2vec's text and binary formats (as gensim's ``KeyedVectors`` reads them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


def save_word2vec(path: str | Path, words: Sequence[str], vectors: torch.Tensor, binary: bool = False) -> None:
    """Write ``vectors`` (N, D) for ``words`` as ``N D`` then one word and its vector per line
    (text), or the word, a space and D little-endian float32 values (binary)."""
    array = vectors.detach().cpu().numpy().astype("<f4")
    if len(words) != array.shape[0]:
        raise ValueError(f"{len(words)} words for {array.shape[0]} vectors")
    for word in words:
        if not word or any(ch.isspace() for ch in word):
            raise ValueError(f"word {word!r} cannot be written in word2vec format (empty or with whitespace)")
    with open(path, "wb") as out:
        out.write(f"{array.shape[0]} {array.shape[1]}\n".encode())
        for word, row in zip(words, array):
            if binary:
                out.write(word.encode() + b" " + row.tobytes() + b"\n")
            else:
                out.write((word + " " + " ".join(f"{x:.6g}" for x in row) + "\n").encode())


def load_word2vec(path: str | Path, binary: bool = False) -> tuple[list[str], torch.Tensor]:
    """Read a file written by :func:`save_word2vec` (or by word2vec/gensim)."""
    with open(path, "rb") as source:
        count, dim = (int(x) for x in source.readline().split())
        words, rows = [], np.empty((count, dim), dtype=np.float32)
        for i in range(count):
            if binary:
                word = bytearray()
                while (ch := source.read(1)) != b" ":
                    if not ch:
                        raise ValueError(f"{path}: file ends inside entry {i + 1} of {count}")
                    if ch != b"\n":
                        word += ch
                rows[i] = np.frombuffer(source.read(4 * dim), dtype="<f4", count=dim)
                words.append(word.decode())
            else:
                parts = source.readline().decode().rstrip("\n").split(" ")
                if len(parts) != dim + 1:
                    raise ValueError(f"{path}: line {i + 2} has {len(parts) - 1} values, expected {dim}")
                words.append(parts[0])
                rows[i] = np.asarray(parts[1:], dtype=np.float32)
    return words, torch.from_numpy(rows)


@dataclass
class Coverage:
    """How a vocabulary was matched to pretrained vectors."""

    exact: int
    lowercased: int
    missing: int
    missing_examples: list[str]
    scale: float = 1.0


def init_embedding(
    embedding: torch.nn.Embedding,
    tokens: Sequence[str],
    words: Sequence[str],
    vectors: torch.Tensor,
    freeze: bool,
    skip: Sequence[int] = (0,),
    rescale: bool = False,
) -> Coverage:
    """Copy the pretrained vector of each token into ``embedding`` (the token itself, else its
    lowercase form); tokens without one keep their random initialisation. Rows in ``skip``
    (padding) are left alone. ``rescale`` multiplies the copied vectors by one factor that gives
    them the root mean square of the table's initial values, so that matched and unmatched rows
    start on one scale (directions and relative lengths are kept). ``freeze`` stops training of
    the whole table."""
    if vectors.shape[1] != embedding.embedding_dim:
        raise ValueError(
            f"pretrained vectors have {vectors.shape[1]} dimensions, the embedding "
            f"{embedding.embedding_dim}: set the embedding size to match"
        )
    index = {w: i for i, w in enumerate(words)}
    exact = lowercased = 0
    missing: list[str] = []
    rows, sources = [], []
    for row, token in enumerate(tokens):
        if row in skip:
            continue
        source = index.get(token)
        if source is not None:
            exact += 1
        else:
            source = index.get(token.lower())
            if source is None:
                missing.append(token)
                continue
            lowercased += 1
        rows.append(row)
        sources.append(source)
    scale = 1.0
    with torch.no_grad():
        pretrained = vectors[torch.tensor(sources, dtype=torch.long)].to(embedding.weight.dtype)
        if rescale and rows:
            initial = embedding.weight[[r for r in range(embedding.num_embeddings) if r not in skip]]
            scale = float(initial.pow(2).mean().sqrt() / pretrained.pow(2).mean().sqrt().clamp_min(1e-12))
            pretrained = pretrained * scale
        embedding.weight[torch.tensor(rows, dtype=torch.long)] = pretrained
    embedding.weight.requires_grad_(not freeze)
    return Coverage(exact, lowercased, len(missing), missing[:20], scale)


def init_embedding_from(
    embedding: torch.nn.Embedding, tokens: Sequence[str], path: str | Path, freeze: bool, rescale: bool
) -> str:
    """:func:`init_embedding` with the vectors of a word2vec output (a directory holding
    ``vectors.txt``, or a ``.txt``/``.bin`` file); returns a line saying how the tokens matched."""
    path = Path(path)
    file = path / "vectors.txt" if path.is_dir() else path
    words, vectors = load_word2vec(file, binary=file.suffix == ".bin")
    coverage = init_embedding(embedding, tokens, words, vectors, freeze, rescale=rescale)
    return (
        f"embeddings from {file}: {coverage.exact} tokens matched, {coverage.lowercased} by their lowercase "
        f"form, {coverage.missing} initialised randomly (e.g. {coverage.missing_examples[:8]}), scaled by "
        f"{coverage.scale:.4g}; {'frozen' if freeze else 'fine-tuned'}"
    )
