"""Study beam search on a validation set: BLEU, output length and speed for greedy and beam sizes
and length penalties, side by side in one run.

    python bench/beam.py CHECKPOINT --data-dir PREPROCESSED [--split valid] [--beams 1 5 10]
                         [--alphas 0 0.6 1.0] [--max-sentences 0]

For every (beam, alpha) it decodes the split's sources with the checkpoint's other decode settings
and reports corpus BLEU and chrF (sacreBLEU against the raw references), the brevity penalty and
the output/reference length ratio (BLEU's own), the mean model log-probability of the chosen
translations (higher is a better search by the model's own measure), how many sentences the beam
changed against greedy, and sentences/s. Ends with one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from measure import cpu_name  # noqa: E402

from jobs.common.checkpoint import Bundle  # noqa: E402
from jobs.common.translation import translate  # noqa: E402
from pipelines.contract.manifest import load_manifest  # noqa: E402
from pipelines.contract.parallel_shards import read_pairs  # noqa: E402
from rnn_models.search import length_penalty  # noqa: E402


def log_probability(hypothesis, beam: int, alpha: float) -> float:
    """The model's log-probability of a translation (<eos> included); beam search scores ended
    translations divided by the length penalty of their length with <eos>."""
    if beam == 1 or not hypothesis.tokens and hypothesis.score == float("-inf"):
        return hypothesis.score
    import torch

    return hypothesis.score * float(length_penalty(torch.tensor(len(hypothesis.tokens) + 1), alpha))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument(
        "--data-dir", type=Path, required=True, help="the preprocessing output the model was trained on"
    )
    parser.add_argument("--split", default="valid")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.6, 1.0])
    parser.add_argument("--max-sentences", type=int, default=0, help="the first N sentences only (0 = all)")
    args = parser.parse_args()

    from sacrebleu.metrics import BLEU, CHRF

    bundle = Bundle.load(args.checkpoint)
    manifest = load_manifest(args.data_dir, "parallel")
    pairs = read_pairs(args.data_dir, manifest["splits"][args.split]["files"], text=True)
    sources, references = pairs.src_text, pairs.tgt_text
    if args.max_sentences:
        sources, references = sources[: args.max_sentences], references[: args.max_sentences]
    base = bundle.decode_settings()
    bleu, chrf = BLEU(lowercase=bundle.tgt_lowercase), CHRF(lowercase=bundle.tgt_lowercase)
    rows, greedy_texts = [], None
    for beam in args.beams:
        for alpha in args.alphas if beam > 1 else [0.0]:
            settings = replace(base, beam=beam, alpha=alpha)
            started = time.perf_counter()
            out = translate(bundle, sources, settings)
            seconds = time.perf_counter() - started
            texts = [t.text for t in out]
            b = bleu.corpus_score(texts, [references])
            greedy_texts = texts if beam == 1 else greedy_texts
            row = {
                "beam": beam,
                "alpha": alpha,
                "bleu": round(b.score, 2),
                "chrf": round(chrf.corpus_score(texts, [references]).score, 2),
                "bp": round(b.bp, 4),
                "length_ratio": round(b.sys_len / b.ref_len, 4),
                "mean_logprob": round(sum(log_probability(t.hypothesis, beam, alpha) for t in out) / len(out), 4),
                "changed_vs_greedy": (sum(a != g for a, g in zip(texts, greedy_texts)) if greedy_texts else None),
                "sentences_per_s": round(len(out) / seconds, 1),
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(
        json.dumps(
            {
                "checkpoint": args.checkpoint,
                "split": args.split,
                "sentences": len(sources),
                "cpu": cpu_name(),
                "cpus": os.cpu_count(),
                "decode": base.to_dict(),
                "bleu_signature": str(bleu.get_signature()),
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
