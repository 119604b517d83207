"""Intrinsic evaluation of word vectors: Google analogies, WordSim-353, nearest neighbours."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F


@dataclass
class Analogies:
    """Questions ``a b c d`` (a is to b as c is to d) and the section each belongs to."""

    questions: list[tuple[str, str, str, str]]
    sections: list[str]

    @classmethod
    def load(cls, path: str | Path, lowercase: bool = True) -> Analogies:
        """Read the Google analogy file (``: section`` headers, then four words per line)."""
        questions, sections, section = [], [], ""
        for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            if line.startswith(":"):
                section = line[1:].strip()
            elif line.strip():
                words = line.lower().split() if lowercase else line.split()
                if len(words) != 4:
                    raise ValueError(f"{path}:{number}: expected four words, got {line!r}")
                questions.append(tuple(words))
                sections.append(section)
        return cls(questions, sections)


def analogy_accuracy(
    words: Sequence[str], vectors: torch.Tensor, analogies: Analogies, restrict: int = 30000, batch: int = 1024
) -> dict[str, float | int]:
    """3CosAdd accuracy over the questions whose four words are among the first ``restrict`` words
    (``words`` in frequency order); the question's own words are never an answer. Sections whose
    name starts with ``gram`` are syntactic, the others semantic (as in gensim)."""
    index = {w: i for i, w in enumerate(words[:restrict])}
    unit = F.normalize(vectors[:restrict].float(), dim=1)
    covered = [
        (q, s.startswith("gram")) for q, s in zip(analogies.questions, analogies.sections) if all(w in index for w in q)
    ]
    correct = {True: 0, False: 0}
    total = {True: 0, False: 0}
    for start in range(0, len(covered), batch):
        chunk = covered[start : start + batch]
        ids = torch.tensor([[index[w] for w in q] for q, _ in chunk])
        target = unit[ids[:, 1]] - unit[ids[:, 0]] + unit[ids[:, 2]]
        scores = F.normalize(target, dim=1) @ unit.T
        scores.scatter_(1, ids[:, :3], float("-inf"))
        hits = scores.argmax(1) == ids[:, 3]
        for (_, syntactic), hit in zip(chunk, hits.tolist()):
            correct[syntactic] += hit
            total[syntactic] += 1

    def share(hit: int, n: int) -> float:
        return hit / n if n else float("nan")

    return {
        "accuracy": share(correct[True] + correct[False], total[True] + total[False]),
        "semantic": share(correct[False], total[False]),
        "syntactic": share(correct[True], total[True]),
        "covered": total[True] + total[False],
        "questions": len(analogies.questions),
    }


def load_similarity(path: str | Path, lowercase: bool = True) -> list[tuple[str, str, float]]:
    """Word pairs with a human score: ``word1 word2 score`` separated by tabs or commas; lines
    starting with ``#`` and a header line are skipped."""
    pairs, first = [], True
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = [f.strip() for f in (line.split("\t") if "\t" in line else line.split(","))]
        try:
            score = float(fields[2])
        except (IndexError, ValueError):
            if first and len(fields) == 3:
                first = False
                continue  # the header
            raise ValueError(f"{path}:{number}: expected 'word1 word2 score', got {line!r}") from None
        first = False
        a, b = (fields[0].lower(), fields[1].lower()) if lowercase else (fields[0], fields[1])
        pairs.append((a, b, score))
    return pairs


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks starting at 1, ties sharing their mean rank."""
    order = values.argsort()
    sorted_values = values[order]
    ranks = torch.empty_like(values, dtype=torch.float64)
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman's rank correlation (Pearson correlation of the ranks)."""
    rx, ry = _ranks(x.double()), _ranks(y.double())
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx * ry).sum() / (rx.norm() * ry.norm()))


def similarity_correlation(
    words: Sequence[str], vectors: torch.Tensor, pairs: Sequence[tuple[str, str, float]]
) -> dict[str, float | int]:
    """Spearman correlation between cosine similarity and the human scores, over the pairs whose
    two words have vectors."""
    index = {w: i for i, w in enumerate(words)}
    known = [(index[a], index[b], s) for a, b, s in pairs if a in index and b in index]
    if len(known) < 2:
        return {"spearman": float("nan"), "covered": len(known), "pairs": len(pairs)}
    a, b, human = (torch.tensor(col) for col in zip(*known))
    cosine = F.cosine_similarity(vectors[a].float(), vectors[b].float(), dim=1)
    return {"spearman": spearman(cosine, human), "covered": len(known), "pairs": len(pairs)}


def nearest_neighbours(
    words: Sequence[str], vectors: torch.Tensor, probes: Sequence[str], n: int = 8
) -> dict[str, list[tuple[str, float]]]:
    """The ``n`` words closest by cosine to each probe word that has a vector."""
    index = {w: i for i, w in enumerate(words)}
    unit = F.normalize(vectors.float(), dim=1)
    result = {}
    for probe in probes:
        if probe in index:
            scores = unit @ unit[index[probe]]
            scores[index[probe]] = float("-inf")
            top = scores.topk(min(n, len(words) - 1))
            result[probe] = [(words[i], round(float(s), 4)) for s, i in zip(top.values, top.indices)]
    return result
