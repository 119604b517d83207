"""What the training jobs report besides metrics: word2vec's evaluation scores and 2-D projection
plot, the translator's attention heatmaps."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from jobs.common.checkpoint import Bundle
from jobs.common.translation import Translation
from pipelines.contract.specials import EOS
from rnn_models.embedding_eval import (
    Analogies,
    analogy_accuracy,
    load_similarity,
    nearest_neighbours,
    similarity_correlation,
)
from rnn_models.translator import frame_target


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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
    plt = _pyplot()
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


def attention_heatmaps(
    bundle: Bundle, translations: Sequence[Translation], sources: Sequence[str], count: int, directory: Path
) -> list[Path]:
    """Attention heatmaps of the first ``count`` translations (source ids x output ids, as words or pieces)."""
    plt = _pyplot()
    paths = []
    for i, translation in enumerate(translations[:count]):
        ids = translation.source_ids
        if not ids or bundle.model.decoder.attention is None:
            continue
        src = torch.tensor([ids])
        tgt_in, _ = frame_target(torch.tensor([translation.hypothesis.tokens], dtype=torch.long))
        with torch.no_grad():
            _, weights = bundle.model(src, torch.tensor([len(ids)]), tgt_in)
        w = weights[0].numpy()  # output words and <eos> x source positions as fed
        if bundle.model.settings.reverse_source:
            w = w[:, ::-1]
        fig, ax = plt.subplots(figsize=(1 + 0.4 * len(ids), 1 + 0.4 * w.shape[0]))
        ax.imshow(w, cmap="Greys", aspect="auto")
        ax.set_xticks(range(len(ids)), [bundle.src_tokens[t] for t in ids], rotation=90)
        ax.set_yticks(range(w.shape[0]), [bundle.tgt_tokens[t] for t in translation.hypothesis.tokens] + [EOS])
        ax.set_title(sources[i][:60], fontsize=8)
        fig.tight_layout()
        paths.append(directory / f"attention-{i}.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths
