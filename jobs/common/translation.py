"""Translating raw text with a trained translator (``jobs.common.checkpoint.Bundle``), and scoring translations.

Shared by ``jobs.train_translator`` (validation BLEU), ``jobs.translate`` and ``jobs.evaluate``, so
all three normalize, decode and post-process alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from jobs.common import progress as progress_bars
from jobs.common.checkpoint import Bundle
from pipelines.contract.specials import UNK, UNK_ID
from pipelines.text.detokenize import detokenize, restore
from pipelines.text.normalize import placeholder_values, tokenize
from rnn_models.batching import pad
from rnn_models.search import DecodeSettings, Hypothesis, decode


@dataclass
class Translation:
    text: str
    tokens: list[str]  # the output tokens after placeholder restoration and the [UNK] policy
    source_tokens: list[str]  # the normalized source (as far as it was read: see truncated)
    source_ids: list[int]  # the source as the model read it (words or pieces)
    hypothesis: Hypothesis  # the model's output ids, score and attention alignment
    truncated: bool
    nbest: list[tuple[str, float]] = field(default_factory=list)  # decode.nbest > 1: (text, score), best first


def translate(
    bundle: Bundle,
    texts: Sequence[str],
    settings: DecodeSettings,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> list[Translation]:
    """Translate raw sentences: normalize and encode as in training, decode (greedy at beam 1),
    fill placeholders back from the source, handle unknown words, detokenize. Empty inputs give
    empty outputs; sources longer than ``settings.max_tokens`` are cut there (``truncated``).
    ``progress``: a bar over the sentences (on a terminal)."""
    max_tokens, batch_size = settings.max_tokens, settings.batch_size
    sources = [tokenize(text, bundle.src_options) for text in texts]
    # ids, and the source token each id belongs to; cut at max_tokens ids
    encoded = [bundle.src_codec.encode(s) for s in sources]
    truncated = [len(ids) > max_tokens for ids, _ in encoded]
    ids = [ids[:max_tokens] for ids, _ in encoded]
    owners = [owner[:max_tokens] for _, owner in encoded]
    sources = [s[: owner[-1] + 1] if owner else [] for s, owner in zip(sources, owners)]
    results: list[Translation | None] = [None] * len(texts)
    order = sorted((i for i in range(len(texts)) if ids[i]), key=lambda i: len(ids[i]))
    bundle.model.eval()
    bar = progress_bars.bar(progress, total=len(order), unit=" sentences", desc=f"beam {settings.beam}", leave=False)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        bar.update(len(chunk))
        src, src_len = pad([np.asarray(ids[i], dtype=np.int64) for i in chunk], device)
        for i, hyp in zip(chunk, decode(bundle.model, src, src_len, settings)):
            values = placeholder_values(texts[i], bundle.src_options)

            def finish(h: Hypothesis) -> list[str]:
                """Output tokens with placeholders filled from the source and the [UNK] policy applied."""
                tokens, heads = bundle.tgt_codec.decode(h.tokens)
                # each output token's source token: the one its head id attended to most
                alignment = [_at(owners[i], _at(h.alignment, head)) for head in heads]
                return restore(tokens, values, sources[i], alignment, settings.copy_unk)

            restored = finish(hyp)
            results[i] = Translation(
                detokenize(restored, bundle.tgt_lang),
                restored,
                sources[i],
                ids[i],
                hyp,
                truncated[i],
                [(detokenize(finish(h), bundle.tgt_lang), h.score) for h in hyp.nbest],
            )
    bar.close()
    empty = Hypothesis([], [], 0.0)
    return [r if r is not None else Translation("", [], [], [], empty, False) for r in results]


def _at(values: Sequence[int], index: int) -> int:
    """``values[index]``, or -1 (no position) when ``index`` is out of range."""
    return values[index] if 0 <= index < len(values) else -1


def translate_and_score(
    bundle: Bundle,
    sources: Sequence[str],
    references: Sequence[str],
    settings: DecodeSettings,
    beam: int,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> tuple[dict[str, Any], list[Translation]]:
    """Translate ``sources`` at ``beam`` with the other ``settings``, ``score`` the result against
    ``references`` and count its ``[UNK]``s."""
    translations = translate(bundle, sources, replace(settings, beam=beam), device, progress)
    scores = score([t.text for t in translations], references, bundle.tgt_lowercase)
    return {**scores, **unk_counts(translations)}, translations


def unk_counts(translations: Sequence[Translation]) -> dict[str, int]:
    """``unk``: the ``[UNK]`` ids the model output; ``unk_kept``: those the output text still holds
    after the ``[UNK]`` policy."""
    return {
        "unk": sum(t.hypothesis.tokens.count(UNK_ID) for t in translations),
        "unk_kept": sum(t.tokens.count(UNK) for t in translations),
    }


def score(hypotheses: Sequence[str], references: Sequence[str], lowercase: bool) -> dict[str, Any]:
    """Corpus BLEU and chrF (sacrebleu) against raw references, with their signatures; case-blind
    when the model's target side was lowercased."""
    from sacrebleu.metrics import BLEU, CHRF

    bleu, chrf = BLEU(lowercase=lowercase), CHRF(lowercase=lowercase)
    refs = [list(references)]
    b, c = bleu.corpus_score(list(hypotheses), refs), chrf.corpus_score(list(hypotheses), refs)
    return {
        "bleu": b.score,
        "chrf": c.score,
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }
