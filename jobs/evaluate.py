"""Score a trained translator on named test sets and log the scores to MLflow.

    python -m jobs.evaluate checkpoint=PATH [CONFIG.yaml] [key=value ...]
    python -m jobs.evaluate "checkpoint=[A, B]" ...      # an ensemble of A and B

For each set and beam size: corpus BLEU and chrF (sacrebleu) of the detokenized translations
against the raw references, with their signatures. Decode settings are the checkpoint's (its
training config's ``decode``) with the ``decode.*`` keys given here on top. Prints one line of JSON
last.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jobs.common import cli
from jobs.common.checkpoint import Bundle
from jobs.common.config import ConfigError, load_config, to_dict, to_yaml
from jobs.common.job_output import show_config
from jobs.common.line_stream import read_lines
from jobs.common.tracking import mlflow_run, tracking_uri
from jobs.common.translation import translate_and_score
from pipelines.contract.errors import InputError
from pipelines.contract.manifest import load_manifest
from pipelines.contract.parallel_shards import read_pairs
from rnn_models.search import DecodeSettings


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
        for key in ("src", "ref"):
            if not Path(entry[key]).is_file():
                raise InputError(f"test set {entry.get('name')!r}: {key} {entry[key]} does not exist")
        src = read_lines(Path(entry["src"]).read_bytes(), entry["src"])
        ref = read_lines(Path(entry["ref"]).read_bytes(), entry["ref"])
        if len(src) != len(ref):
            raise ConfigError(f"{entry['src']} has {len(src)} lines, {entry['ref']} {len(ref)}")
        return src, ref
    raise ConfigError(f"test set {entry.get('name')!r} needs data_dir (and split) or src and ref")


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    cfg = load_config("evaluate", argv)
    show_config(cfg, "evaluate")
    config = to_dict(cfg)
    device = "cuda" if config["use_gpu"] else "cpu"
    if not config["beams"] or any(not isinstance(b, int) or b < 1 for b in config["beams"]):
        raise ConfigError(f"beams must be a list of beam sizes >= 1 (1 = greedy), got {config['beams']}")
    sources = config["checkpoint"] if isinstance(config["checkpoint"], list) else [config["checkpoint"]]
    bundle = Bundle.load_all([str(c) for c in sources], device, tracking_uri(config["mlflow"]))
    settings = DecodeSettings.from_dict(config["decode"], base=bundle.decode_settings())
    results: dict[str, Any] = {"checkpoint": str(config["checkpoint"])}
    with mlflow_run(config["mlflow"], config["run_name"], params=to_dict(cfg)) as mlflow:
        mlflow.log_text(to_yaml(cfg), "config.yaml")
        for entry in config["sets"]:
            sources, references = load_set(entry)
            for beam in config["beams"]:
                scores, translations = translate_and_score(
                    bundle, sources, references, settings, beam, device, config["progress"]
                )
                key = f"{entry['name']}_{'greedy' if beam == 1 else f'beam{beam}'}"
                results[key] = {
                    "bleu": scores["bleu"],
                    "chrf": scores["chrf"],
                    "sentences": len(sources),
                    "unk": scores["unk"],
                    "unk_kept": scores["unk_kept"],
                    "bleu_signature": scores["bleu_signature"],
                    "chrf_signature": scores["chrf_signature"],
                }
                mlflow.log_metrics({f"{key}_{name}": scores[name] for name in ("bleu", "chrf", "unk", "unk_kept")})
                mlflow.log_text("".join(t.text + "\n" for t in translations), f"translations/{key}.txt")
                print(
                    f"{key}: BLEU {scores['bleu']:.2f} chrF {scores['chrf']:.2f}, {scores['unk']} [UNK] output "
                    f"({scores['unk_kept']} left after the [UNK] policy) ({scores['bleu_signature']})",
                    flush=True,
                )
        mlflow.log_dict(results, "scores.json")
    print(json.dumps(results))
    return results


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
