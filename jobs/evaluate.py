"""Score a trained translator on named test sets and log the scores to MLflow.

    python -m jobs.evaluate checkpoint=PATH [CONFIG.yaml] [key=value ...]

For each set and beam size: corpus BLEU and chrF (sacrebleu) of the detokenized translations
against the raw references, with their signatures. Prints one line of JSON last.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jobs.config import ConfigError, load_config, to_dict, to_yaml
from jobs.tracking import mlflow_run
from jobs.translation import Bundle, InputError, read_lines, translate_and_score
from pipelines.manifest import ManifestError, load_manifest
from pipelines.parallel_shards import read_pairs


def load_set(entry: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Sources and references of one named test set."""
    if entry.get("data_dir"):
        data_dir = Path(entry["data_dir"])
        manifest = load_manifest(data_dir, "parallel")
        split = entry.get("split", "test")
        if split not in manifest["splits"]:
            raise ConfigError(f"{data_dir} has no split {split!r}")
        pairs = read_pairs(data_dir, manifest["splits"][split]["files"], text=True)
        return pairs.src_text, pairs.tgt_text
    if entry.get("src") and entry.get("ref"):
        src = read_lines(Path(entry["src"]).read_bytes(), entry["src"])
        ref = read_lines(Path(entry["ref"]).read_bytes(), entry["ref"])
        if len(src) != len(ref):
            raise ConfigError(f"{entry['src']} has {len(src)} lines, {entry['ref']} {len(ref)}")
        return src, ref
    raise ConfigError(f"test set {entry.get('name')!r} needs data_dir (and split) or src and ref")


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    cfg = load_config("evaluate", argv)
    config = to_dict(cfg)
    device = "cuda" if config["use_gpu"] else "cpu"
    bundle = Bundle.load(config["checkpoint"], device)
    d = config["decode"]
    results: dict[str, Any] = {"checkpoint": str(config["checkpoint"])}
    with mlflow_run(config["mlflow"], config["run_name"], params=to_dict(cfg)) as mlflow:
        mlflow.log_text(to_yaml(cfg), "config.yaml")
        for entry in config["sets"]:
            sources, references = load_set(entry)
            for beam in config["beams"]:
                scores, translations = translate_and_score(bundle, sources, references, d, beam, device)
                key = f"{entry['name']}_{'greedy' if beam == 1 else f'beam{beam}'}"
                results[key] = {"bleu": scores["bleu"], "chrf": scores["chrf"], "sentences": len(sources),
                                "bleu_signature": scores["bleu_signature"], "chrf_signature": scores["chrf_signature"]}
                mlflow.log_metrics({f"{key}_bleu": scores["bleu"], f"{key}_chrf": scores["chrf"]})
                mlflow.log_text("".join(t.text + "\n" for t in translations), f"translations/{key}.txt")
                print(f"{key}: BLEU {scores['bleu']:.2f} chrF {scores['chrf']:.2f} ({scores['bleu_signature']})",
                      flush=True)
        mlflow.log_dict(results, "scores.json")
    print(json.dumps(results))
    return results


def main() -> None:
    try:
        run()
    except (ConfigError, ManifestError, InputError, FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
