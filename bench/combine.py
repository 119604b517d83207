"""Compare single translators, checkpoint averages and ensembles on one test split, side by side in
one run: BLEU, chrF and decoding speed, greedy and with beam search.

    python bench/combine.py --data-dir PREPROCESSED --system NAME=CHECKPOINT[+CHECKPOINT...] [...]
                            [--split test] [--beams 1 5] [--max-sentences 0]

Each ``--system`` names a checkpoint (what ``jobs.translate`` takes: a ``translator.pt``, a
directory holding one such as a training output's ``best/``, ``best_epoch/`` or ``averaged/``, an
MLflow URI), or several joined by ``+`` to decode as an ensemble (log-probabilities averaged at each
step). Every system decodes the split's sources with the first checkpoint's decode settings at each
beam size and is scored with sacreBLEU against the raw references. Sentences/s is the decoding
alone (after a short untimed warm-up), on this machine's CPU (named in the output), one system
after the other. Ends with one line
of JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from measure import cpu_name  # noqa: E402

from jobs.common.checkpoint import Bundle  # noqa: E402
from jobs.common.translation import score, translate, unk_counts  # noqa: E402
from pipelines.contract.manifest import load_manifest  # noqa: E402
from pipelines.contract.parallel_shards import read_pairs  # noqa: E402


def system(text: str) -> tuple[str, list[str]]:
    """``NAME=A[+B...]`` as the name and its checkpoints."""
    name, _, checkpoints = text.partition("=")
    if not name or not checkpoints:
        raise argparse.ArgumentTypeError(f"a system is NAME=CHECKPOINT[+CHECKPOINT...], got {text!r}")
    return name, checkpoints.split("+")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", type=Path, required=True, help="the preprocessing output the models were trained on"
    )
    parser.add_argument("--system", type=system, action="append", required=True, help="NAME=CHECKPOINT[+CHECKPOINT...]")
    parser.add_argument("--split", default="test")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--max-sentences", type=int, default=0, help="the first N sentences only (0 = all)")
    args = parser.parse_args()

    import torch

    manifest = load_manifest(args.data_dir, "parallel")
    pairs = read_pairs(args.data_dir, manifest["splits"][args.split]["files"], text=True)
    n = args.max_sentences or len(pairs.src_text)
    sources, references = pairs.src_text[:n], pairs.tgt_text[:n]
    results = {}
    for name, checkpoints in args.system:
        bundle = Bundle.load_all(checkpoints)
        settings = bundle.decode_settings()
        for beam in args.beams:
            translate(bundle, sources[:8], replace(settings, beam=beam))  # warm-up, not timed
            started = time.perf_counter()
            translations = translate(bundle, sources, replace(settings, beam=beam))
            seconds = time.perf_counter() - started
            scores = score([t.text for t in translations], references, bundle.tgt_lowercase)
            row = {
                "bleu": round(scores["bleu"], 2),
                "chrf": round(scores["chrf"], 2),
                "sentences_per_sec": round(len(sources) / seconds, 1),
                **unk_counts(translations),
            }
            results[f"{name}_beam{beam}"] = row
            print(
                f"{name:>20} beam {beam}: BLEU {row['bleu']:5.2f}  chrF {row['chrf']:5.2f}  "
                f"{row['sentences_per_sec']:6.1f} sentences/s  [UNK] {row['unk']}",
                file=sys.stderr,
                flush=True,
            )
    print(
        json.dumps(
            {
                "cpu": cpu_name(),
                "torch_threads": torch.get_num_threads(),
                "split": args.split,
                "sentences": len(sources),
                "bleu_signature": scores["bleu_signature"],
                "systems": {name: checkpoints for name, checkpoints in args.system},
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
