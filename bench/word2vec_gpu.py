"""Words/s of rnnmt's word2vec training step on one GPU (or the CPU), without Ray.

    python bench/word2vec_gpu.py DATA_DIR [--batch-words N ...] [--noise-block B] [--seconds S]

Runs the loop each Ray Train worker runs (subsample, windows, noise, direct SGD step) over the
train shards of a monolingual preprocessing output, repeating them until ``--seconds`` have
passed, once per batch size; prints words/s per batch size and ends with one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.contract.token_stream import read_token_share  # noqa: E402
from pipelines.contract.vocab import Vocab  # noqa: E402
from rnn_models.skipgram import (
    Word2Vec,
    Word2VecSettings,
    keep_probabilities,
    linear_lr,  # noqa: E402
    training_stream,
)


def measure(tokens, sentences, counts, batch_words: int, noise_block: int, seconds: float, device) -> dict:
    torch.manual_seed(0)
    model = Word2Vec(Word2VecSettings(len(counts), noise_block=noise_block), counts).to(device)
    keep = keep_probabilities(torch.tensor(counts), 1e-4).to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    words, pairs, step, loss = 0, 0, 0, 0.0
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    started = None
    while True:
        lo = (step * batch_words) % max(1, tokens.numel() - batch_words)
        stream = training_stream(tokens[lo : lo + batch_words], sentences[lo : lo + batch_words], keep, 5, generator)
        loss, terms = model.train_step(stream, model.draw_noise(stream, generator), linear_lr(0.025, 0.1))
        step += 1
        if step == 3:  # warm-up done
            sync()
            started, words = time.perf_counter(), 0
        elif started:
            words += batch_words
            pairs += terms
            if time.perf_counter() - started > seconds:
                break
    sync()
    elapsed = time.perf_counter() - started
    return {
        "batch_words": batch_words,
        "noise_block": noise_block,
        "words_per_sec": round(words / elapsed),
        "steps": step,
        "pairs_per_word": round(pairs / max(words, 1), 2),
        "last_loss_per_pair": round(loss / max(terms, 1), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--batch-words", type=int, nargs="+", default=[500, 65536, 262144, 1048576])
    parser.add_argument("--noise-block", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--cpu", action="store_true")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    counts = Vocab.load(args.data_dir / "vocab" / "words.tsv").counts
    files = sorted(p.relative_to(args.data_dir).as_posix() for p in (args.data_dir / "train").glob("*.parquet"))
    share = read_token_share(args.data_dir, files, 0, 1)
    tokens = torch.from_numpy(share.tokens).long().to(device)
    sentences = torch.from_numpy(share.sentences).to(device)
    results = []
    for batch_words in args.batch_words:
        results.append(measure(tokens, sentences, counts, batch_words, args.noise_block, args.seconds, device))
        print(results[-1], flush=True)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(
        json.dumps(
            {"device": name, "torch": torch.__version__, "stream_words": int(tokens.numel()), "results": results}
        )
    )


if __name__ == "__main__":
    main()
