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
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jobs.common import cli
from jobs.common.collectives import worker_log
from jobs.common.driver import Trainer, train
from jobs.common.lm_checkpoint import LM_FILE, LMBundle
from jobs.common.model_registry import PERPLEXITY, TestMetric, arrays_digest
from jobs.common.tracking import MetricsLog
from jobs.common.training_loop import Family, LoopSettings
from pipelines.contract.errors import ConfigError, ManifestError, check_integer
from pipelines.contract.manifest import load_manifest
from pipelines.contract.token_stream import read_token_share
from pipelines.contract.vocab import load_vocab, vocab_identity
from rnn_models.language_model import (
    LanguageModel,
    LanguageModelSettings,
    loss_metrics,
    segment_count,
    segments,
    stream_loss,
    stream_rows,
)
from rnn_models.recurrent import detach_state
from rnn_models.sampling import SampleSettings
from rnn_models.translator import sequence_loss

PATH_KEYS = ("data_dir", "output_dir")


def settings_of(config: dict[str, Any], vocab: int) -> LanguageModelSettings:
    """The model settings a config describes for a vocabulary of ``vocab`` entries."""
    return LanguageModelSettings.from_dict({**config["model"], "vocab": vocab})


def stream(
    data_dir: Path, manifest: dict[str, Any], split: str, rank: int = 0, world: int = 1, max_tokens: int = 0
) -> np.ndarray:
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
        self.steps = segment_count(
            stream_length(self.manifest, "train", t["max_tokens"]) // world, t["batch_size"], t["bptt"]
        )
        self.valid = (
            stream(data_dir, self.manifest, "valid", max_tokens=config["valid"]["max_tokens"]) if rank == 0 else None
        )
        self.state: Any = None  # the recurrent state carried from one segment to the next
        self.bundle: LMBundle | None = None  # made at the first samples, once the model exists
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
            if self.bundle is None:  # made once (no cached_property: see TranslatorFamily.validate)
                self.bundle = LMBundle.from_manifest(self.model, self.manifest, self.vocab, self.pieces)
            sampling = SampleSettings.from_dict(self.config["sampling"])
            texts = self.bundle.generate(
                "", v["sample_tokens"], sampling, v["samples"], self.config["seed"] + epoch, device=self.device
            ).texts
            if self.texts is not None:
                self.texts.client.log_text(self.texts.run_id, "\n\n".join(texts), f"samples/epoch-{epoch + 1:03d}.txt")
            worker_log(f"epoch {epoch + 1} sample: {texts[0][:300]!r}")
        return metrics

    def describe(self, metrics: dict[str, Any]) -> str:
        bits = f", {metrics['valid_bits_per_char']:.3f} bits/char" if self.chars else ""
        return f"valid loss {metrics['valid_loss']:.4f} ppl {metrics['valid_perplexity']:.2f}{bits}"


def prepare(config: dict[str, Any]) -> None:
    """Check the config and its input before anything starts."""
    t = config["train"]
    LoopSettings.from_config(config)
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
        raise ConfigError(
            f"the train split's {total} tokens are too few for {t['num_workers']} worker(s) of "
            f"{t['batch_size']} rows: lower train.batch_size"
        )


class LanguageModelTrainer(Trainer):
    """The language model's part of the job on the driver: an ``lm.pt`` bundle that reads and
    writes raw text, the test stream's perplexity, sample texts; champion by the lowest test perplexity."""

    job, family, checkpoint_file = "train_lm", LanguageModelFamily, LM_FILE
    prepare = staticmethod(prepare)

    def __init__(self, cfg: Any, config: dict[str, Any], mlflow: Any):
        super().__init__(cfg, config, mlflow)
        self.manifest = load_manifest(self.data_dir, "monolingual")
        self.vocab, self.pieces = load_vocab(self.data_dir, self.manifest["vocab"]["words"])
        self.test_tokens: np.ndarray | None = None
        self.samples: list[str] = []

    def bundle(self, best: dict[str, Any]) -> LMBundle:
        model = LanguageModel(settings_of(self.config, len(self.vocab)))
        model.load_state_dict(best["model"])
        model.eval()
        bundle = LMBundle.from_manifest(model, self.manifest, self.vocab, self.pieces)
        bundle.info = {
            "best_epoch": best["metrics"]["epoch"],
            "valid_loss": best["metrics"]["valid_loss"],
            "mlflow_run_id": self.config["mlflow_run_id"],
            "sampling": self.config["sampling"],
        }
        return bundle

    def test(self, bundle: LMBundle) -> dict[str, Any]:
        v, split = self.config["valid"], self.config["valid"]["test_split"]
        if not self.manifest["splits"].get(split, {}).get("tokens", {}).get("words"):
            return {}
        self.test_tokens = stream(self.data_dir, self.manifest, split)
        total, tokens = stream_loss(bundle.model, self.test_tokens, v["batch_size"], self.config["train"]["bptt"])
        chars = self.manifest["vocab"]["words"]["kind"] == "char"
        return {
            **loss_metrics("test", total / max(tokens, 1), tokens, chars),
            "test_set": arrays_digest(
                vocab_identity(self.manifest["vocab"]["words"]), np.asarray(self.test_tokens, np.int64)
            ),
        }

    def summary_extras(self, bundle: LMBundle) -> dict[str, Any]:
        v = self.config["valid"]
        self.samples = bundle.generate(
            "", v["sample_tokens"], bundle.sample_settings(), max(1, v["samples"]), self.config["seed"]
        ).texts
        return {"samples": self.samples}

    def log_extras(self, bundle: LMBundle, test: dict[str, Any]) -> None:
        self.mlflow.log_text("\n\n".join(self.samples), "samples/best.txt")

    def test_metric(self, bundle: LMBundle) -> TestMetric:
        return PERPLEXITY

    def score_champion(self, uri: str, bundle: LMBundle) -> float | None:
        """The champion's perplexity on this run's test stream, if it reads the same ids."""
        champion = LMBundle.load(uri, tracking_uri=self.config["mlflow_tracking_uri"])
        if (champion.tokens, champion.kind, champion.pieces) != (bundle.tokens, bundle.kind, bundle.pieces):
            return None
        total, count = stream_loss(
            champion.model, self.test_tokens, self.config["valid"]["batch_size"], self.config["train"]["bptt"]
        )
        return math.exp(total / max(count, 1))


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the job; returns the summary it prints last."""
    return train(LanguageModelTrainer, argv)


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
