"""What the word2vec job reports about its vectors: evaluation scores and a 2-D projection plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rnn_models.embedding_eval import (Analogies, analogy_accuracy, load_similarity, nearest_neighbours,
                                       similarity_correlation)


def evaluate(words: Sequence[str], vectors: torch.Tensor, cfg: dict[str, Any]) -> dict[str, Any]:
    """Analogy accuracy, similarity correlation and probe neighbours; a missing evaluation file is
    reported as skipped (with its path), not an error."""
    scores: dict[str, Any] = {}
    if cfg["analogy"] and Path(cfg["analogy"]).is_file():
        scores["analogy"] = analogy_accuracy(words, vectors, Analogies.load(cfg["analogy"]), cfg["analogy_vocab"])
    else:
        scores["skipped"] = [f"analogy: no file {cfg['analogy']}"]
    if cfg["similarity"] and Path(cfg["similarity"]).is_file():
        scores["similarity"] = similarity_correlation(words, vectors, load_similarity(cfg["similarity"]))
    else:
        scores.setdefault("skipped", []).append(f"similarity: no file {cfg['similarity']}")
    scores["neighbours"] = nearest_neighbours(words, vectors, cfg["probes"], cfg["neighbours"])
    for message in scores.get("skipped", []):
        print(f"evaluation skipped: {message}", flush=True)
    return scores


def projection_plot(words: Sequence[str], vectors: torch.Tensor, count: int, path: Path) -> None:
    """Scatter the ``count`` first (most frequent) words on the first two principal components."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [i for i, w in enumerate(words) if any(ch.isalpha() for ch in w)][:count]
    points = vectors[chosen].float()
    points = points - points.mean(0)
    _, _, v = torch.linalg.svd(points, full_matrices=False)
    xy = (points @ v[:2].T).numpy()
    figure, axes = plt.subplots(figsize=(12, 12))
    axes.scatter(xy[:, 0], xy[:, 1], s=4, alpha=0.5)
    for (x, y), i in zip(xy, chosen):
        axes.annotate(words[i], (x, y), fontsize=7)
    axes.set_title(f"{len(chosen)} most frequent words, first two principal components")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
