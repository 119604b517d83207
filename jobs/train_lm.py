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

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jobs.common import cli, ray_train
from jobs.common.config import to_yaml
from jobs.common.lm_checkpoint import LM_FILE, LMBundle
from jobs.common.model_registry import PERPLEXITY, arrays_digest, log_language_model, register
from jobs.common.precision import amp_mode, autocast
from jobs.common.ray_train import BEST_FILE, STATE_FILE, MetricsLog, broadcast, check_replicas, worker_log
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
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("fixed", "plateau")


@dataclass
class Progress:
    """Where training stands; every checkpoint stores it, and a resumed run goes on from it."""

    epoch: int = 0                  # epochs finished
    best_loss: float = math.inf     # best validation loss (nats per token) so far, and its epoch
    best_epoch: int = -1
    bad_epochs: int = 0             # epochs since the best one (early stopping)
    lr: float = 0.0                 # the learning rate of the next epoch
    train_seconds: float = 0.0      # spent in training steps
    loop_seconds: float = 0.0       # wall clock of the epochs, validation included (train.max_minutes)
    train_tokens: float = 0.0       # tokens trained on (predicted), by all workers


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


class LMTraining:
    """One worker's training: its share of the stream, the model and optimizer, and the epochs."""

    def __init__(self, config: dict[str, Any], rank: int, world: int, device: torch.device):
        from ray.train.torch import prepare_model

        self.config, self.rank, self.world, self.device = config, rank, world, device
        t = self.t = config["train"]
        torch.set_num_threads(max(1, int(t["cpus_per_worker"])))
        data_dir = Path(config["data_dir"])
        self.manifest = load_manifest(data_dir, "monolingual")
        vocab, pieces = load_vocab(data_dir, self.manifest["vocab"]["words"])
        self.fingerprint = vocab_identity(self.manifest["vocab"]["words"])
        self.chars = self.manifest["vocab"]["words"]["kind"] == "char"
        # this worker's rows of the training stream, and the segments every worker takes (the same number)
        share = stream(data_dir, self.manifest, "train", rank, world, t["max_tokens"])
        self.rows = stream_rows(share, t["batch_size"]).to(device)
        self.steps = segment_count(stream_length(self.manifest, "train", t["max_tokens"]) // world, t["batch_size"],
                                   t["bptt"])
        self.valid = stream(data_dir, self.manifest, "valid", max_tokens=config["valid"]["max_tokens"]) \
            if rank == 0 else None
        torch.manual_seed(config["seed"])  # the same initial parameters on every worker
        self.model = LanguageModel(settings_of(config, len(vocab)))
        self.model.to(device)
        optimizer = torch.optim.SGD if t["optimizer"] == "sgd" else torch.optim.Adam
        self.optimizer = optimizer(self.model.parameters(), lr=t["lr"])
        self.progress = Progress(lr=t["lr"])
        self.best_state: dict[str, Any] | None = None  # rank 0: the best model so far, on the CPU
        self.ddp_model = prepare_model(self.model, move_to_device=False)
        self.bundle = LMBundle.from_manifest(self.model, self.manifest, vocab, pieces)
        self.log_metrics = MetricsLog.for_rank(config, rank)
        self.autocast = autocast(device, t["amp"])

    def restore(self, checkpoint: Any) -> None:
        """Go on from a Ray Train checkpoint (None: start afresh)."""
        if checkpoint is None:
            return
        progress, self.best_state = ray_train.resume_training(checkpoint, self.config, self.fingerprint, self.model,
                                                              self.optimizer, self.device, self.rank)
        self.progress = Progress(**progress)

    def train_epoch(self, epoch: int) -> bool:
        """One epoch over this worker's rows, segment by segment; True when the time budget ran out."""
        t, progress = self.t, self.progress
        for group in self.optimizer.param_groups:
            group["lr"] = progress.lr
        torch.manual_seed(self.config["seed"] * 1_000_003 + epoch * 101 + self.rank)  # dropout masks
        self.model.train()
        window = {"loss": 0.0, "tokens": 0, "seconds": 0.0}  # since the last progress report
        clock = ray_train.EpochClock(progress.loop_seconds, t["max_minutes"], t["report_seconds"], self.device,
                                     ray_train.epoch_bar(self.config, self.rank, epoch, self.steps))
        state, out_of_time = None, False
        for step, (inputs, targets) in enumerate(segments(self.rows, t["bptt"])):
            if step == self.steps:  # every worker takes the same number of steps
                break
            # the step: forward from the carried state, loss per token, backward, clip, update
            started = time.perf_counter()
            with self.autocast:
                logits, state = self.ddp_model(inputs, state)
            loss, tokens = sequence_loss(logits, targets)
            self.optimizer.zero_grad(set_to_none=True)
            (loss / max(tokens, 1)).backward()
            if t["clip_norm"]:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), t["clip_norm"])
            self.optimizer.step()
            state = detach_state(state)  # truncated BPTT: the next segment starts here, gradients stop here
            seconds = time.perf_counter() - started
            window = {"loss": window["loss"] + float(loss.detach()), "tokens": window["tokens"] + tokens,
                      "seconds": window["seconds"] + seconds}
            progress.train_seconds += seconds
            progress.train_tokens += tokens * self.world
            # rank 0's clock decides for all: is the time budget spent, is a progress report due
            out_of_time, report = clock.check(step, self.steps)
            if report:
                self._log_progress(window, epoch + (step + 1) / self.steps)
                window = {"loss": 0.0, "tokens": 0, "seconds": 0.0}
            if out_of_time:
                break
        progress.loop_seconds += clock.stop()
        return out_of_time

    def _log_progress(self, window: dict[str, float], epoch_progress: float) -> None:
        if self.log_metrics is not None:
            loss = window["loss"] / max(window["tokens"], 1)
            self.log_metrics({"train_loss": loss, "train_perplexity": math.exp(min(loss, 50)),
                              "tokens_per_sec": window["tokens"] * self.world / max(window["seconds"], 1e-9),
                              "lr": self.optimizer.param_groups[0]["lr"], "epoch_progress": epoch_progress},
                             int(self.progress.train_tokens))

    def validate(self, epoch: int) -> dict[str, Any]:
        """Rank 0's validation metrics and sample texts (empty on the other workers)."""
        if self.rank != 0:
            return {}
        started = time.perf_counter()
        v = self.config["valid"]
        total, tokens = stream_loss(self.model, self.valid, v["batch_size"], self.t["bptt"], self.device)
        metrics = loss_metrics("valid", total / max(tokens, 1), tokens, self.chars)
        if v["samples"]:
            sampling = SampleSettings.from_dict(self.config["sampling"])
            texts = self.bundle.generate("", v["sample_tokens"], sampling, v["samples"], self.config["seed"] + epoch,
                                         device=self.device).texts
            if self.log_metrics is not None:
                self.log_metrics.client.log_text(self.log_metrics.run_id, "\n\n".join(texts),
                                                 f"samples/epoch-{epoch:03d}.txt")
            worker_log(f"epoch {epoch} sample: {texts[0][:300]!r}")
        self.model.train()
        self.progress.loop_seconds += time.perf_counter() - started
        return metrics

    def end_epoch(self, epoch: int, metrics: dict[str, Any], out_of_time: bool) -> bool:
        """Set the next learning rate, keep the best model, report the epoch with a checkpoint;
        returns whether training stops here (time budget or early stopping)."""
        t, progress = self.t, self.progress
        check_replicas(self.model, self.device)
        loss = broadcast([metrics.get("valid_loss", 0.0)], self.device)[0]  # rank 0's, on every worker
        improved = loss < progress.best_loss
        progress.epoch, progress.bad_epochs = epoch + 1, 0 if improved else progress.bad_epochs + 1
        if t["schedule"] == "fixed" and epoch + 1 >= t["decay_after"] or t["schedule"] == "plateau" and not improved:
            progress.lr = max(t["min_lr"], progress.lr * t["lr_decay"])
        if improved:
            progress.best_loss, progress.best_epoch = loss, epoch
            if self.rank == 0:
                self.best_state = {"model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                                   "metrics": dict(metrics, epoch=epoch)}
        stop = out_of_time or bool(t["patience"] and progress.bad_epochs >= t["patience"])
        metrics.update(epoch=epoch, best_epoch=progress.best_epoch, lr=self.optimizer.param_groups[0]["lr"],
                       train_seconds=progress.train_seconds, loop_seconds=progress.loop_seconds,
                       train_tokens=progress.train_tokens,
                       train_tokens_per_sec=progress.train_tokens / max(progress.train_seconds, 1e-9),
                       stopped_early=bool(stop and epoch + 1 < t["epochs"]))
        if self.rank == 0:
            bits = f", {metrics['valid_bits_per_char']:.3f} bits/char" if self.chars else ""
            worker_log(f"epoch {epoch}: valid loss {metrics['valid_loss']:.4f} ppl {metrics['valid_perplexity']:.2f}"
                       f"{bits}, {metrics['train_tokens_per_sec']:,.0f} tokens/s")
        ray_train.report_training(metrics, self.rank, self.model, self.optimizer, asdict(progress), self.fingerprint,
                                  self.best_state)
        return stop


def train_func_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker loop: restore, then epochs of training, validation and a checkpoint."""
    from ray.train.torch import get_device

    rank, world = ray_train.world()
    training = LMTraining(config, rank, world, get_device())
    training.restore(ray_train.resumable_checkpoint())
    for epoch in range(training.progress.epoch, config["train"]["epochs"]):
        out_of_time = training.train_epoch(epoch)
        if training.end_epoch(epoch, training.validate(epoch), out_of_time):
            break


def prepare(config: dict[str, Any]) -> None:
    """Check the config and its input before anything starts."""
    t = config["train"]
    settings_of(config, 10)
    amp_mode(t["amp"])
    SampleSettings.from_dict(config["sampling"])
    for key, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
        if t[key] not in allowed:
            raise ConfigError(f"train.{key} must be one of {', '.join(allowed)}; got {t[key]!r}")
    for key in ("batch_size", "bptt", "num_workers"):
        check_integer(f"train.{key}", t[key], 1)
    if not t["lr"] > 0 or not 0 < t["lr_decay"] <= 1:
        raise ConfigError(f"train.lr must be > 0 and train.lr_decay in (0, 1]; got {t['lr']}, {t['lr_decay']}")
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
        result = ray_train.fit(train_func_per_worker, config, log_reports=True)
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
                   "train_seconds": round(progress.train_seconds, 1), "train_tokens": int(progress.train_tokens),
                   "train_tokens_per_sec": progress.train_tokens / max(progress.train_seconds, 1e-9),
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
