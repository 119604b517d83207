"""Benchmark the preprocessing job on real corpora against a single-process pure-Python run.

    python bench/preprocess.py [--data-dir ../shared/data] [--corpus wikipedia tatoeba] [--skip-local1]
                               [--subwords] [--skip-python]

For each corpus, in one run on this machine:
- rnnmt's job (`python -m jobs.preprocess <preset>`) with Spark local[2] and local[1], as a
  subprocess, so Spark's start-up is included and the JVM's memory counts in the peak. local[1]
  runs twice: as is (the JVM's JIT and GC threads and the Python workers still use the other
  core) and pinned to one CPU with taskset (the cost on one core);
- the same work in one Python process with the pure-Python twin of the rules: read, tokenize,
  filter, count, build the vocabulary, encode, write Parquet shards;
- with --subwords, the job again with the corpus's subword preset (`conf/preprocess/<corpus>_bpe.yaml`:
  a SentencePiece model trained on the driver, pieces encoded on the workers), and its wall time
  against the word-level job's in the same run.
Reports wall seconds, words per second (whitespace words of the input) and peak RSS of the
process tree, and the ratios. Ends with one line of JSON holding the figures.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from measure import PeakMemory, cpu_name  # noqa: E402

from pipelines.contract.vocab import rank_tokens, select_vocab  # noqa: E402
from pipelines.text.normalize import NormalizeOptions, tokenize  # noqa: E402

PRESETS = {"wikipedia": "conf/preprocess/wikipedia.yaml", "tatoeba": "conf/preprocess/tatoeba.yaml"}
SUBWORD_PRESETS = {"wikipedia": "conf/preprocess/wikipedia_bpe.yaml", "tatoeba": "conf/preprocess/tatoeba_bpe.yaml"}


def count_words(files: list[Path]) -> int:
    words = 0
    for path in files:
        with gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8") as f:
            words += sum(len(line.split()) for line in f)
    return words


def input_files(corpus: str, data_dir: Path) -> list[Path]:
    if corpus == "wikipedia":
        return sorted((data_dir / "english").glob("*.txt.gz"))
    return [data_dir / "tatoeba-en-fr" / "fra.txt.gz"]


def run_spark(
    corpus: str, data_dir: Path, master: str, out: Path, one_cpu: bool = False, subwords: bool = False
) -> dict:
    preset = (SUBWORD_PRESETS if subwords else PRESETS)[corpus]
    cmd = (["taskset", "-c", "0"] if one_cpu else []) + [
        sys.executable,
        "-m",
        "jobs.preprocess",
        preset,
        f"data_root={data_dir}",
        f"output_dir={out}",
        f"spark.master={master}",
        "mlflow.enabled=false",
        "overwrite=true",
    ]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with PeakMemory(proc.pid) as memory:
        stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{stderr[-3000:]}")
    summary = json.loads(stdout.strip().splitlines()[-1])
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(memory.peak / 2**20),
        "kept": summary["kept"],
        "vocab": summary["vocab"],
        "job_seconds": summary["seconds"],
    }


def _lines(path: Path):
    with gzip.open(path, "rb") as f:
        for raw in f:
            yield raw.rstrip(b"\n")


def run_python(corpus: str, data_dir: Path, out: Path) -> dict:
    """The same pipeline in one Python process (reads the same preset's settings)."""
    from jobs.common.config import load_config, to_dict

    cfg = to_dict(load_config("preprocess", [PRESETS[corpus], f"data_root={data_dir}"]))
    flt, norm = cfg["filter"], cfg["normalize"]
    parallel = cfg["data"]["kind"] == "parallel"
    langs = [cfg["data"]["src_lang"]] + ([cfg["data"]["tgt_lang"]] if parallel else [])
    options = [
        NormalizeOptions.for_language(lang, norm["unicode"], norm["lowercase"], norm["apostrophe"]) for lang in langs
    ]
    started = time.perf_counter()
    with PeakMemory(os.getpid()) as memory:
        examples, seen, dropped = [], set(), Counter()
        for path in input_files(corpus, data_dir):
            for raw in _lines(path):
                try:
                    line = raw.decode("utf-8").rstrip("\r")
                except UnicodeDecodeError:
                    line = "\ufffd"
                if "\ufffd" in line:
                    dropped["invalid_utf8"] += 1
                    continue
                fields = line.split("\t") if parallel else [line]
                if len(fields) < len(options):
                    dropped["missing_column"] += 1
                    continue
                if max(len(f) for f in fields[: len(options)]) > flt["max_chars"]:
                    dropped["line_too_long"] += 1
                    continue
                tokens = [tokenize(f, o) for f, o in zip(fields, options)]
                lengths = [len(t) for t in tokens]
                if min(lengths) < max(flt["min_len"], 1):
                    dropped["empty_or_short"] += 1
                elif max(lengths) > flt["max_len"]:
                    dropped["too_long"] += 1
                elif parallel and flt["max_ratio"] and max(lengths) > flt["max_ratio"] * min(lengths):
                    dropped["length_ratio"] += 1
                else:
                    key = "\n".join(" ".join(t) for t in tokens)
                    if flt["dedup"]:
                        if key in seen:
                            dropped["duplicate"] += 1
                            continue
                        seen.add(key)
                    bucket = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
                    examples.append((bucket, tokens))
        valid, test = cfg["split"]["valid"], cfg["split"]["test"]
        counters = [Counter() for _ in options]
        for bucket, tokens in examples:
            if (bucket % 1_000_000) / 1e6 >= valid + test:
                for counter, toks in zip(counters, tokens):
                    counter.update(toks)
        vocabs = [
            select_vocab(rank_tokens(c.items()), cfg["vocab"]["max_size"], cfg["vocab"]["min_count"], sum(c.values()))
            for c in counters
        ]
        indexes = [v.index for v in vocabs]
        shards = cfg["output"]["shards"]
        out.mkdir(parents=True, exist_ok=True)
        for shard in range(shards):
            rows = [tokens for bucket, tokens in examples if (bucket >> 20) % shards == shard]
            columns = {
                f"c{i}": pa.array([[index.get(t, 1) for t in toks[i]] for toks in rows], pa.list_(pa.int32()))
                for i, index in enumerate(indexes)
            }
            pq.write_table(pa.table(columns), out / f"part-{shard:05d}.parquet")
    return {
        "seconds": round(time.perf_counter() - started, 2),
        "peak_rss_mb": round(memory.peak / 2**20),
        "kept": len(examples),
        "vocab": [len(v) for v in vocabs],
        "dropped": dict(dropped),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=PROJECT.parent / "shared" / "data")
    parser.add_argument("--corpus", nargs="+", choices=sorted(PRESETS), default=["wikipedia", "tatoeba"])
    parser.add_argument("--skip-local1", action="store_true", help="do not measure Spark local[1]")
    parser.add_argument("--skip-python", action="store_true", help="do not run the single-process twin")
    parser.add_argument("--subwords", action="store_true", help="also run the corpus's subword (BPE) preset")
    args = parser.parse_args()
    data_dir = args.data_dir.resolve()
    results = {
        "machine": {
            "cpu": cpu_name(),
            "cpus": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "load_before": [round(x, 2) for x in os.getloadavg()],
        }
    }
    with tempfile.TemporaryDirectory(prefix="rnnmt-bench-") as tmp:
        for corpus in args.corpus:
            words = count_words(input_files(corpus, data_dir))
            entry: dict = {"words": words}
            runs = [("spark_local2", lambda: run_spark(corpus, data_dir, "local[2]", Path(tmp) / f"{corpus}-2"))]
            if not args.skip_local1:
                runs.append(
                    ("spark_local1", lambda: run_spark(corpus, data_dir, "local[1]", Path(tmp) / f"{corpus}-1"))
                )
                if shutil.which("taskset"):
                    runs.append(
                        (
                            "spark_local1_one_cpu",
                            lambda: run_spark(corpus, data_dir, "local[1]", Path(tmp) / f"{corpus}-1p", one_cpu=True),
                        )
                    )
            if args.subwords:
                runs.append(
                    (
                        "spark_local2_bpe",
                        lambda: run_spark(corpus, data_dir, "local[2]", Path(tmp) / f"{corpus}-bpe", subwords=True),
                    )
                )
            if not args.skip_python:
                runs.append(("python", lambda: run_python(corpus, data_dir, Path(tmp) / f"{corpus}-py")))
            for name, fn in runs:
                result = fn()
                result["words_per_s"] = round(words / result["seconds"])
                entry[name] = result
                print(
                    f"{corpus:10s} {name:20s} {result['seconds']:8.1f} s {result['words_per_s']:>11,} words/s "
                    f"peak {result['peak_rss_mb']:>6,} MB  kept {result['kept']:,}",
                    flush=True,
                )
            if "python" in entry:
                entry["speedup_vs_python"] = round(entry["python"]["seconds"] / entry["spark_local2"]["seconds"], 2)
            if "spark_local2_bpe" in entry:
                entry["bpe_vs_word_wall"] = round(
                    entry["spark_local2_bpe"]["seconds"] / entry["spark_local2"]["seconds"], 2
                )
            for one in ("spark_local1", "spark_local1_one_cpu"):
                if one in entry:
                    entry[f"scaling_local2_vs_{one.removeprefix('spark_')}"] = round(
                        entry[one]["seconds"] / entry["spark_local2"]["seconds"], 2
                    )
                    entry[f"scaling_local2_vs_{one.removeprefix('spark_')}_job_only"] = round(
                        entry[one]["job_seconds"] / entry["spark_local2"]["job_seconds"], 2
                    )
            results[corpus] = entry
    results["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(results))


if __name__ == "__main__":
    main()
