"""Train a recurrent language model data-parallel on Ray Train; keep the best and last models.

    python -m jobs.train_lm [CONFIG.yaml] data_dir=DIR output_dir=DIR [key=value ...]

Each worker reads its contiguous share of the training stream (the train split's documents in
order, each ended by ``<eos>``), cuts it into ``train.batch_size`` rows and trains on segments of
``train.bptt`` steps with truncated backpropagation through time (the state carried across segments,
detached); DDP averages the gradients (gloo on CPU, NCCL on GPU). After each epoch rank 0 scores the
valid stream (perplexity; bits per character for character models), draws sample texts, and reports a
checkpoint with the training state and the best model so far; a rerun with the same ``run_name``
resumes from it. The driver then publishes ``output_dir/best`` and ``output_dir/last``, scores the
test stream, logs it all to MLflow and registers the model (``mlflow.registry_name``; the alias
``champion`` goes to the lowest test perplexity). The last line printed is a JSON summary.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jobs.common import cli, ray_train
from jobs.common.config import to_yaml
from jobs.common.lm_checkpoint import LM_FILE, LMBundle
from jobs.common.model_registry import PERPLEXITY, arrays_digest, log_language_model, register
from jobs.common.collectives import worker_log
from jobs.common.tracking import MetricsLog
from jobs.common.training_loop import BEST_FILE, STATE_FILE, Family, Progress, check_train_settings
from pipelines.contract.atomic import atomic_directory
from pipelines.contract.errors import ConfigError, ManifestError, check_integer
from pipelines.contract.manifest import load_manifest
from pipelines.contract.token_stream import read_token_share
from pipelines.contract.vocab import load_vocab, vocab_identity
from rnn_models.language_model import LanguageModel, LanguageModelSettings, loss_metrics, segment_count, segments, \
    stream_loss, stream_rows
from rnn_models.recurrent import detach_state
from rnn_models.sampling import SampleSettings
from rnn_models.translator import sequence_loss

PATH_KEYS = ("data_dir", "output_dir")


def settings_of(config: dict[str, Any], vocab: int) -> LanguageModelSettings:
    """The model settings a config describes for a vocabulary of ``vocab`` entries."""
    return LanguageModelSettings.from_dict({**config["model"], "vocab": vocab})


def stream(data_dir: Path, manifest: dict[str, Any], split: str, rank: int = 0, world: int = 1,
           max_tokens: int = 0) -> np.ndarray:
    """A split's token stream (each document ended by ``<eos>``), or worker ``rank``'s share of it."""
    return read_token_share(data_dir, manifest["splits"][split]["files"], rank, world, max_tokens, eos=True).tokens


def stream_length(manifest: dict[str, Any], split: str, max_tokens: int = 0) -> int:
    """Tokens in a split's stream (``<eos>`` included), at most ``max_tokens`` when > 0."""
    entry = manifest["splits"][split]
    total = entry["tokens"]["words"] + entry["examples"]
    return min(total, max_tokens) if max_tokens > 0 else total


class LanguageModelFamily(Family):
    """The language model in the shared loop: this worker's rows of the training stream, segments
    of ``train.bptt`` steps with the recurrent state carried across them, and the valid stream's
    perplexity (the best model has the lowest loss)."""

    metric, higher_is_better, unit = "valid_loss", False, "tokens"

    def __init__(self, config: dict[str, Any], rank: int, world: int, device: torch.device):
        self.config, self.rank, self.device = config, rank, device
        t = self.t = config["train"]
        data_dir = Path(config["data_dir"])
        self.manifest = load_manifest(data_dir, "monolingual")
        self.vocab, self.pieces = load_vocab(data_dir, self.manifest["vocab"]["words"])
        self.fingerprint = vocab_identity(self.manifest["vocab"]["words"])
        self.chars = self.manifest["vocab"]["words"]["kind"] == "char"
        # this worker's rows of the training stream, and the segments every worker takes (the same number)
        share = stream(data_dir, self.manifest, "train", rank, world, t["max_tokens"])
        self.rows = stream_rows(share, t["batch_size"]).to(device)
        self.steps = segment_count(stream_length(self.manifest, "train", t["max_tokens"]) // world, t["batch_size"],
                                   t["bptt"])
        self.valid = stream(data_dir, self.manifest, "valid", max_tokens=config["valid"]["max_tokens"]) \
            if rank == 0 else None
        self.state: Any = None  # the recurrent state carried from one segment to the next
        self.texts = MetricsLog.for_rank(config, rank)  # the sample texts go to the job's MLflow run

    def build_model(self) -> LanguageModel:
        return LanguageModel(settings_of(self.config, len(self.vocab)))

    def batches(self, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        self.state = None  # every epoch reads the stream from its start
        return list(itertools.islice(segments(self.rows, self.t["bptt"]), self.steps))

    def step(self, batch: tuple[torch.Tensor, torch.Tensor], forward: Any) -> tuple[torch.Tensor, float, float]:
        inputs, targets = batch
        logits, state = forward(inputs, self.state)
        self.state = detach_state(state)  # truncated BPTT: the next segment starts here, gradients stop here
        loss, tokens = sequence_loss(logits, targets)
        return loss / max(tokens, 1), float(loss.detach()), tokens

    def progress_metrics(self, loss: float) -> dict[str, float]:
        return {"train_perplexity": math.exp(min(loss, 50))}

    def validate(self, epoch: int) -> dict[str, Any]:
        """The valid stream's loss and perplexity (bits per character for characters); sample texts."""
        v = self.config["valid"]
        total, tokens = stream_loss(self.model, self.valid, v["batch_size"], self.t["bptt"], self.device)
        metrics = loss_metrics("valid", total / max(tokens, 1), tokens, self.chars)
        if v["samples"]:
            bundle = LMBundle.from_manifest(self.model, self.manifest, self.vocab, self.pieces)
            sampling = SampleSettings.from_dict(self.config["sampling"])
            texts = bundle.generate("", v["sample_tokens"], sampling, v["samples"], self.config["seed"] + epoch,
                                    device=self.device).texts
            if self.texts is not None:
                self.texts.client.log_text(self.texts.run_id, "\n\n".join(texts), f"samples/epoch-{epoch:03d}.txt")
            worker_log(f"epoch {epoch} sample: {texts[0][:300]!r}")
        return metrics

    def describe(self, metrics: dict[str, Any]) -> str:
        bits = f", {metrics['valid_bits_per_char']:.3f} bits/char" if self.chars else ""
        return f"valid loss {metrics['valid_loss']:.4f} ppl {metrics['valid_perplexity']:.2f}{bits}"


def prepare(config: dict[str, Any]) -> None:
    """Check the config and its input before anything starts."""
    t = config["train"]
    check_train_settings(t, config["valid"])
    settings_of(config, 10)
    SampleSettings.from_dict(config["sampling"])
    for key in ("batch_size", "bptt"):
        check_integer(f"train.{key}", t[key], 1)
    manifest = load_manifest(Path(config["data_dir"]), "monolingual")
    for split in ("train", "valid"):
        if not manifest["splits"][split]["tokens"]["words"]:
            raise ManifestError(f"{config['data_dir']} has no tokens in its {split} split: a language model needs some")
    total = stream_length(manifest, "train", t["max_tokens"])
    if segment_count(total // t["num_workers"], t["batch_size"], t["bptt"]) < 1:
        raise ConfigError(f"the train split's {total} tokens are too few for {t['num_workers']} worker(s) of "
                          f"{t['batch_size']} rows: lower train.batch_size")


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the job; returns the summary it prints last."""
    with ray_train.training_run("train_lm", argv, PATH_KEYS, prepare) as (cfg, config, mlflow):
        started = time.perf_counter()
        output_dir, data_dir = Path(config["output_dir"]), Path(config["data_dir"])
        manifest = load_manifest(data_dir, "monolingual")
        vocab, pieces = load_vocab(data_dir, manifest["vocab"]["words"])
        chars = manifest["vocab"]["words"]["kind"] == "char"
        result = ray_train.fit(partial(ray_train.loop_worker, LanguageModelFamily), config, log_reports=True)
        files = ray_train.read_checkpoint(result.checkpoint, [STATE_FILE, BEST_FILE])
        last, best = files[STATE_FILE], files[BEST_FILE]

        # the best model as a bundle that reads and writes raw text; publish best/ and last/
        model = LanguageModel(settings_of(config, len(vocab)))
        model.load_state_dict(best["model"])
        model.eval()
        bundle = LMBundle.from_manifest(model, manifest, vocab, pieces)
        bundle.info = {"best_epoch": best["metrics"]["epoch"], "valid_loss": best["metrics"]["valid_loss"],
                       "mlflow_run_id": config["mlflow_run_id"], "sampling": config["sampling"]}
        with atomic_directory(output_dir, overwrite=config["overwrite"]) as tmp:
            for name, state in (("best", best["model"]), ("last", last["model"])):
                (tmp / name).mkdir()
                bundle.save(tmp / name / LM_FILE, state)
            (tmp / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")

        # the test stream's perplexity, and samples from the best model
        v = config["valid"]
        test, test_tokens = {}, None
        if manifest["splits"].get(v["test_split"], {}).get("tokens", {}).get("words"):
            test_tokens = stream(data_dir, manifest, v["test_split"])
            total, tokens = stream_loss(model, test_tokens, v["batch_size"], config["train"]["bptt"])
            test = loss_metrics("test", total / max(tokens, 1), tokens, chars)
        samples = bundle.generate("", v["sample_tokens"], bundle.sample_settings(), max(1, v["samples"]),
                                  config["seed"]).texts
        progress = Progress(**last["progress"])
        summary = {"best": str(output_dir / "best"), "last": str(output_dir / "last"),
                   "best_epoch": best["metrics"]["epoch"], "epochs": progress.epoch,
                   **{k: best["metrics"][k] for k in best["metrics"] if k.startswith("valid_")},
                   "train_seconds": round(progress.train_seconds, 1), "train_tokens": int(progress.train_units),
                   "train_tokens_per_sec": progress.train_units / max(progress.train_seconds, 1e-9),
                   "wall_seconds": round(time.perf_counter() - started, 1), **test, "samples": samples}

        # MLflow: the summary, the samples and the best checkpoint; the model logged and registered
        per_epoch = {"epochs", "best_epoch"} | {k for k in summary if k.startswith("valid_")}
        mlflow.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float)) and k not in per_epoch})
        mlflow.log_text("\n\n".join(samples), "samples/best.txt")
        mlflow.log_artifacts(str(output_dir / "best"), "best")
        if config["mlflow"]["enabled"]:  # the model that continues prompts (models from code, no pickle)
            info = log_language_model(mlflow, output_dir / "best" / LM_FILE, bundle)
            if config["mlflow"]["registry_name"] and test_tokens is not None:
                summary["registry"] = publish(mlflow, info.model_uri, bundle, config, manifest, test_tokens,
                                              test["test_perplexity"])
        mlflow.set_tag("output_dir", str(output_dir))
    print(json.dumps(summary))
    return summary


def publish(mlflow: Any, model_uri: str, bundle: LMBundle, config: dict[str, Any], manifest: dict[str, Any],
            test_tokens: np.ndarray, perplexity: float) -> dict[str, Any]:
    """Register the logged model under ``mlflow.registry_name``: champion when its test perplexity is
    below the champion's on the same test stream (a champion with another vocabulary stays)."""

    def score_champion(uri: str) -> float | None:
        """The champion's perplexity on this run's test stream, if it reads the same ids."""
        champion = LMBundle.load(uri, tracking_uri=config["mlflow_tracking_uri"])
        if (champion.tokens, champion.kind, champion.pieces) != (bundle.tokens, bundle.kind, bundle.pieces):
            return None
        total, count = stream_loss(champion.model, test_tokens, config["valid"]["batch_size"], config["train"]["bptt"])
        return math.exp(total / max(count, 1))

    digest = arrays_digest(vocab_identity(manifest["vocab"]["words"]), np.asarray(test_tokens, np.int64))
    return register(mlflow, model_uri, config["mlflow"]["registry_name"], perplexity, digest, score_champion,
                    PERPLEXITY)


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
