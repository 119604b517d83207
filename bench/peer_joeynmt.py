"""JoeyNMT 2.3, the translator's peer: set up in a virtual environment of its own, trained on the
same tokens with the same model size, its speed read from its own log lines.

JoeyNMT pins old packages, so it is installed with ``--no-deps`` plus what its training imports,
and ``torch==2.13.0`` as ours. It reads rnnmt's preprocessing output turned back into text: the
same tokens (words, ``[UNK]`` for the words beyond rnnmt's 10,000, ``[NUM]``, ``[URL]``) joined by
spaces, split by JoeyNMT on spaces (``level: word``), so both count the same target tokens.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

VERSION = "2.3.0"
# what JoeyNMT's training imports (its own pins are old; these are today's releases)
IMPORTS = [
    "numpy",
    "pyyaml",
    "sacrebleu",
    "subword-nmt",
    "sentencepiece",
    "matplotlib",
    "plotly",
    "pandas",
    "tqdm",
    "tensorboard",
    "importlib_metadata",
    "packaging",
    "sacremoses",
]
RATE = re.compile(r"Tokens per Sec:\s+([0-9.]+)")


def python(results: Path) -> Path:
    """The peer's interpreter, set up on first use under ``results/joeynmt-venv``."""
    venv = results / "joeynmt-venv"
    exe, ready = venv / "bin" / "python", venv / "ready"
    if not ready.is_file():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(exe), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "torch==2.13.0"], check=True)
        subprocess.run([*pip, "--no-deps", f"joeynmt=={VERSION}"], check=True)
        subprocess.run([*pip, *IMPORTS], check=True)
        ready.write_text(VERSION + "\n")
    return exe


def write_data(prepared: Path, out: Path, src: str, tgt: str) -> dict[str, Path]:
    """rnnmt's train/valid/test splits as space-joined tokens, ``<split>.<lang>``; returns the prefixes."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from pipelines.contract.manifest import load_manifest
    from pipelines.contract.parallel_shards import read_pairs
    from pipelines.contract.vocab import Vocab

    manifest = load_manifest(prepared, "parallel")
    vocabs = {side: Vocab.load(prepared / manifest["vocab"][side]["file"]) for side in ("src", "tgt")}
    out.mkdir(parents=True, exist_ok=True)
    prefixes = {}
    for split in ("train", "valid", "test"):
        pairs = read_pairs(prepared, manifest["splits"][split]["files"])
        for side, lang, ids in (("src", src, pairs.src), ("tgt", tgt, pairs.tgt)):
            text = "".join(" ".join(vocabs[side].decode(row)) + "\n" for row in ids)
            (out / f"{split}.{lang}").write_text(text, encoding="utf-8")
        prefixes[split] = out / split
    return prefixes


def write_config(
    prefixes: dict[str, Path], model_dir: Path, src: str, tgt: str, batch_sentences: int, path: Path
) -> Path:
    """JoeyNMT's config for rnnmt's benchmark model: 256-d embeddings, bidirectional LSTM encoder of
    256, LSTM decoder of 256 with Bahdanau attention and input feeding, 10,000 words per side."""
    side = {"level": "word", "lowercase": False, "max_length": 100, "voc_limit": 10000, "voc_min_freq": 1}
    rnn = {
        "type": "recurrent",
        "rnn_type": "lstm",
        "hidden_size": 256,
        "num_layers": 1,
        "dropout": 0.3,
        "embeddings": {"embedding_dim": 256, "scale": False},
    }
    config = {
        "name": "rnnmt-peer",
        "joeynmt_version": VERSION,
        "model_dir": str(model_dir),
        "use_cuda": False,
        "fp16": False,
        "random_seed": 0,
        "data": {
            "train": str(prefixes["train"]),
            "dev": str(prefixes["valid"]),
            "test": str(prefixes["test"]),
            "dataset_type": "plain",
            "src": {"lang": src, **side},
            "trg": {"lang": tgt, **side},
        },
        "training": {
            "optimizer": "adam",
            "learning_rate": 0.002,
            "batch_size": batch_sentences,
            "batch_type": "sentence",
            "eval_batch_size": 64,
            "eval_batch_type": "sentence",
            # a constant rate (its plateau scheduler passes `verbose`, which torch 2.13 no
            # longer takes; no validation runs within the budget anyway)
            "scheduling": "exponential",
            "decrease_factor": 1.0,
            "epochs": 1000,
            "validation_freq": 10**9,
            "logging_freq": 50,
            "eval_metrics": ["bleu"],
            "early_stopping_metric": "bleu",
            "clip_grad_norm": 1.0,
            "shuffle": True,
            "overwrite": True,
            "keep_best_ckpts": 1,
            "num_workers": 0,
            "print_valid_sents": [],
        },
        "testing": {"beam_size": 1, "eval_metrics": ["bleu"]},
        "model": {
            "initializer": "xavier_uniform",
            "bias_initializer": "zeros",
            "embed_initializer": "normal",
            "embed_init_weight": 0.1,
            "encoder": {**rnn, "bidirectional": True},
            "decoder": {
                **rnn,
                "hidden_dropout": 0.3,
                "input_feeding": True,
                "init_hidden": "bridge",
                "attention": "bahdanau",
            },
        },
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def train(exe: Path, config: Path, model_dir: Path, minutes: float) -> dict:
    """Train for ``minutes`` of wall clock (stopped then), and read its target tokens/s: the mean of
    the rates its log lines report (each over its last 50 steps), the first left out as warm-up."""
    try:
        subprocess.run(
            [str(exe), "-m", "joeynmt", "train", str(config)],
            timeout=minutes * 60,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        pass  # the budget ran out, as intended
    log = (model_dir / "train.log").read_text(encoding="utf-8", errors="replace")
    rates = [float(m) for m in RATE.findall(log)]
    if len(rates) < 2:
        raise RuntimeError(f"JoeyNMT logged {len(rates)} training rates; see {model_dir / 'train.log'}")
    return {
        "target_tokens_per_sec": statistics.fmean(rates[1:]),
        "log_lines": len(rates),
        "steps": 50 * len(rates),
        "version": VERSION,
        "log": str(model_dir / "train.log"),
    }
