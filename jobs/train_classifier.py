"""Train a sequence classifier (sentiment analysis) data-parallel on Ray Train; keep the best and last models.

    python -m jobs.train_classifier [CONFIG.yaml] data_dir=DIR output_dir=DIR [key=value ...]

Each worker trains on its share of every epoch's shuffled batches (``train.batch_size`` examples);
DDP averages the gradients (gloo on CPU, NCCL on GPU). After each epoch rank 0 scores the valid
split (loss, accuracy, macro-F1) and reports a checkpoint with the training state and the model of
the best validation accuracy so far; training stops early after ``train.patience`` epochs without a
better one, and a rerun with the same ``run_name`` resumes. The driver then publishes
``output_dir/best`` and ``output_dir/last``, scores the test split, and logs to MLflow the metrics,
a confusion-matrix plot and the misclassified test examples. The last line printed is a JSON summary.
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
from jobs.common.classifier_checkpoint import CLASSIFIER_FILE, ClassifierBundle
from jobs.common.config import to_yaml
from jobs.common.model_registry import ACCURACY, arrays_digest, log_classifier, register
from jobs.common.precision import amp_mode, autocast
from jobs.common.ray_train import BEST_FILE, STATE_FILE, MetricsLog, broadcast, check_replicas, worker_log
from pipelines.contract.atomic import atomic_directory
from pipelines.contract.errors import ConfigError, ManifestError, check_integer
from pipelines.contract.labelled_shards import Labelled, read_labelled
from pipelines.contract.manifest import load_manifest
from pipelines.contract.vocab import Vocab, load_vocab, vocab_identity
from rnn_models.batching import epoch_batches, pad, token_batches, worker_batches
from rnn_models.classifier import Classifier, ClassifierSettings
from rnn_models.word_vectors import init_embedding_from

PATH_KEYS = ("data_dir", "output_dir", "embeddings.path")
OPTIMIZERS = ("adam", "adagrad", "sgd")
PRIORS = ("train", "valid")


@dataclass
class Progress:
    """Where training stands; every checkpoint stores it, and a resumed run goes on from it."""

    epoch: int = 0                  # epochs finished
    best_accuracy: float = -1.0     # best validation accuracy so far, and its epoch
    best_epoch: int = -1
    bad_epochs: int = 0             # epochs since the best one (early stopping)
    train_seconds: float = 0.0      # spent in training steps
    loop_seconds: float = 0.0       # wall clock of the epochs, validation included (train.max_minutes)
    train_examples: float = 0.0     # examples trained on, by all workers


def label_shift(manifest: dict[str, Any], prior: str) -> tuple[float, ...]:
    """What to add to the label scores so that the model predicts under the label frequencies of
    the ``prior`` split rather than those of the training examples: log(p_prior / p_train) per label
    from the manifest's counts, add-one smoothed (Saerens et al. 2002); () for ``train``."""
    if prior == "train":
        return ()
    counts = manifest["labels"]["counts"]
    train, target = (np.asarray(counts[split], np.float64) + 1 for split in ("train", prior))
    return tuple((np.log(target / target.sum()) - np.log(train / train.sum())).tolist())


def settings_of(config: dict[str, Any], vocab: int, manifest: dict[str, Any]) -> ClassifierSettings:
    """The model settings a config describes for ``vocab`` entries and the labels of ``manifest``."""
    return ClassifierSettings.from_dict({**config["model"], "vocab": vocab, "classes": len(manifest["labels"]["names"]),
                                         "label_shift": label_shift(manifest, config["train"]["label_prior"])})


def build_model(config: dict[str, Any], vocab: Vocab, manifest: dict[str, Any], log: bool = True) -> Classifier:
    """The classifier a config describes, with pretrained embeddings where configured (how they
    matched the vocabulary printed if ``log``)."""
    model = Classifier(settings_of(config, len(vocab), manifest))
    e = config["embeddings"]
    if e["path"]:
        coverage = init_embedding_from(model.embedding, vocab.tokens, e["path"], e["freeze"], e["rescale"])
        if log:
            worker_log(coverage)
    return model


def make_batch(data: Labelled, index: Sequence[int], device: torch.device
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded ids, lengths and label ids of the examples ``index``."""
    ids, lengths = pad([data.ids[i] for i in index], device)
    return ids, lengths, torch.as_tensor(data.labels[np.asarray(index)], device=device)


@torch.no_grad()
def predict(model: Classifier, data: Labelled, batch_size: int, device: torch.device | str = "cpu"
            ) -> tuple[float, np.ndarray]:
    """Mean cross-entropy over ``data`` and each example's label probabilities (N, classes)."""
    was_training = model.training
    model.eval()
    loss, probabilities = 0.0, []
    order = np.argsort(data.lengths(), kind="stable")  # similar lengths together: less padding
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        ids, lengths, labels = make_batch(data, index, device)
        logits = model(ids, lengths).float()
        loss += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
        probabilities.append(torch.softmax(logits, dim=-1).cpu().numpy())
    model.train(was_training)
    if not probabilities:
        return 0.0, np.zeros((0, 0), np.float32)
    result = np.empty((len(data), probabilities[0].shape[1]), np.float32)
    result[order] = np.concatenate(probabilities)
    return loss / len(data), result


def training_batches(lengths: np.ndarray, train: dict[str, Any], seed: int, epoch: int) -> list[np.ndarray]:
    """An epoch's batches of example indices: ``train.batch_size`` examples in random order, or with
    ``train.batch_tokens`` examples of similar lengths (far fewer recurrent steps per batch where
    lengths vary as much as the phrases of a treebank do). Depends only on the lengths, seed and epoch."""
    if train["batch_tokens"]:
        return token_batches(lengths, np.zeros_like(lengths), train["batch_tokens"], seed, epoch,  # no target side
                             max_sentences=train["batch_size"])
    return epoch_batches(len(lengths), train["batch_size"], seed, epoch)


def scores(prefix: str, loss: float, labels: np.ndarray, predicted: np.ndarray, classes: int) -> dict[str, float]:
    """Loss, accuracy (percent) and macro-F1 (percent) of ``predicted`` label ids against ``labels``."""
    from sklearn.metrics import f1_score

    return {f"{prefix}_loss": loss, f"{prefix}_accuracy": 100.0 * float(np.mean(predicted == labels)) if len(labels) else 0.0,
            f"{prefix}_macro_f1": 100.0 * float(f1_score(labels, predicted, labels=list(range(classes)),
                                                         average="macro", zero_division=0))}


class ClassifierTraining:
    """One worker's training: the data, the model and optimizer, and the epochs."""

    def __init__(self, config: dict[str, Any], rank: int, world: int, device: torch.device):
        from ray.train.torch import prepare_model

        self.config, self.rank, self.world, self.device = config, rank, world, device
        t = self.t = config["train"]
        torch.set_num_threads(max(1, int(t["cpus_per_worker"])))
        data_dir = Path(config["data_dir"])
        self.manifest = load_manifest(data_dir, "labelled")
        vocab, _ = load_vocab(data_dir, self.manifest["vocab"]["words"])
        self.fingerprint = vocab_identity(self.manifest["vocab"]["words"])
        self.n_labels = len(self.manifest["labels"]["names"])
        self.train = read_labelled(data_dir, self.manifest["splits"]["train"]["files"])
        self.train_lengths = self.train.lengths()  # what every epoch's batches are made from
        self.valid = read_labelled(data_dir, self.manifest["splits"]["valid"]["files"]) if rank == 0 else None
        torch.manual_seed(config["seed"])  # the same initial parameters on every worker
        self.model = build_model(config, vocab, self.manifest, log=rank == 0)
        self.model.to(device)
        optimizer = {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad, "sgd": torch.optim.SGD}[t["optimizer"]]
        # Adam's fused kernel: one pass over each parameter (a quarter less time per step on CPU here)
        fused = {"fused": True} if t["optimizer"] == "adam" else {}
        self.optimizer = optimizer([p for p in self.model.parameters() if p.requires_grad], lr=t["lr"],
                                   weight_decay=t["weight_decay"], **fused)
        self.progress = Progress()
        self.best_state: dict[str, Any] | None = None  # rank 0: the best model so far, on the CPU
        self.ddp_model = prepare_model(self.model, move_to_device=False)
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
        """One epoch over this worker's batches; True when the time budget ran out."""
        t, progress = self.t, self.progress
        torch.manual_seed(self.config["seed"] * 1_000_003 + epoch * 101 + self.rank)  # dropout masks
        self.model.train()
        batches = worker_batches(training_batches(self.train_lengths, t, self.config["seed"], epoch),
                                 self.rank, self.world)
        window = {"loss": 0.0, "examples": 0, "seconds": 0.0}  # since the last progress report
        clock = ray_train.EpochClock(progress.loop_seconds, t["max_minutes"], t["report_seconds"], self.device,
                                     ray_train.epoch_bar(self.config, self.rank, epoch, len(batches)))
        out_of_time = False
        for step, index in enumerate(batches):
            # the step: forward, mean loss over the batch, backward, clip, update
            started = time.perf_counter()
            ids, lengths, labels = make_batch(self.train, index, self.device)
            with self.autocast:
                logits = self.ddp_model(ids, lengths)
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if t["clip_norm"]:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), t["clip_norm"])
            self.optimizer.step()
            seconds = time.perf_counter() - started
            window = {"loss": window["loss"] + float(loss.detach()) * len(index),
                      "examples": window["examples"] + len(index), "seconds": window["seconds"] + seconds}
            progress.train_seconds += seconds
            progress.train_examples += len(index) * self.world
            # rank 0's clock decides for all: is the time budget spent, is a progress report due
            out_of_time, report = clock.check(step, len(batches))
            if report and self.log_metrics is not None:
                self.log_metrics({"train_loss": window["loss"] / max(window["examples"], 1),
                                  "examples_per_sec": window["examples"] * self.world / max(window["seconds"], 1e-9),
                                  "epoch_progress": epoch + (step + 1) / len(batches)}, int(progress.train_examples))
                window = {"loss": 0.0, "examples": 0, "seconds": 0.0}
            if out_of_time:
                break
        progress.loop_seconds += clock.stop()
        return out_of_time

    def validate(self) -> dict[str, Any]:
        """Rank 0's validation metrics (empty on the other workers)."""
        if self.rank != 0:
            return {}
        started = time.perf_counter()
        loss, probabilities = predict(self.model, self.valid, self.config["valid"]["batch_size"], self.device)
        self.progress.loop_seconds += time.perf_counter() - started
        return scores("valid", loss, self.valid.labels, probabilities.argmax(1), self.n_labels)

    def end_epoch(self, epoch: int, metrics: dict[str, Any], out_of_time: bool) -> bool:
        """Keep the best model, report the epoch with a checkpoint; returns whether training stops
        here (time budget or early stopping)."""
        t, progress = self.t, self.progress
        check_replicas(self.model, self.device)
        accuracy = broadcast([metrics.get("valid_accuracy", 0.0)], self.device)[0]  # rank 0's, on every worker
        improved = accuracy > progress.best_accuracy
        progress.epoch, progress.bad_epochs = epoch + 1, 0 if improved else progress.bad_epochs + 1
        if improved:
            progress.best_accuracy, progress.best_epoch = accuracy, epoch
            if self.rank == 0:
                self.best_state = {"model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                                   "metrics": dict(metrics, epoch=epoch)}
        stop = out_of_time or bool(t["patience"] and progress.bad_epochs >= t["patience"])
        metrics.update(epoch=epoch, best_epoch=progress.best_epoch, train_seconds=progress.train_seconds,
                       loop_seconds=progress.loop_seconds, train_examples=progress.train_examples,
                       train_examples_per_sec=progress.train_examples / max(progress.train_seconds, 1e-9),
                       stopped_early=bool(stop and epoch + 1 < t["epochs"]))
        if self.rank == 0:
            worker_log(f"epoch {epoch}: valid loss {metrics['valid_loss']:.4f} accuracy {metrics['valid_accuracy']:.2f} "
                       f"macro-F1 {metrics['valid_macro_f1']:.2f}, {metrics['train_examples_per_sec']:,.0f} examples/s")
        ray_train.report_training(metrics, self.rank, self.model, self.optimizer, asdict(progress), self.fingerprint,
                                  self.best_state)
        return stop


def train_func_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker loop: restore, then epochs of training, validation and a checkpoint."""
    from ray.train.torch import get_device

    rank, world = ray_train.world()
    training = ClassifierTraining(config, rank, world, get_device())
    training.restore(ray_train.resumable_checkpoint())
    for epoch in range(training.progress.epoch, config["train"]["epochs"]):
        out_of_time = training.train_epoch(epoch)
        if training.end_epoch(epoch, training.validate(), out_of_time):
            break


def prepare(config: dict[str, Any]) -> None:
    """Check the config and its input before anything starts."""
    t = config["train"]
    amp_mode(t["amp"])
    if t["label_prior"] not in PRIORS:
        raise ConfigError(f"train.label_prior must be one of {', '.join(PRIORS)}; got {t['label_prior']!r}")
    if t["optimizer"] not in OPTIMIZERS:
        raise ConfigError(f"train.optimizer must be one of {', '.join(OPTIMIZERS)}; got {t['optimizer']!r}")
    for key, low in (("batch_size", 1), ("batch_tokens", 0), ("num_workers", 1), ("epochs", 1)):
        check_integer(f"train.{key}", t[key], low)
    if not t["lr"] > 0:
        raise ConfigError(f"train.lr must be > 0, got {t['lr']}")
    if config["valid"]["test_split"] not in ("train", "valid", "test"):
        raise ConfigError(f"valid.test_split must be train, valid or test; got {config['valid']['test_split']!r}")
    manifest = load_manifest(Path(config["data_dir"]), "labelled")
    settings_of(config, 10, manifest)
    for split in ("train", "valid"):
        if not manifest["splits"][split]["examples"]:
            raise ManifestError(f"{config['data_dir']} has no examples in its {split} split: a classifier needs some")
    if config["embeddings"]["path"] and not Path(config["embeddings"]["path"]).exists():
        raise ConfigError(f"embeddings.path: no such file or directory: {config['embeddings']['path']}")


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the job; returns the summary it prints last."""
    with ray_train.training_run("train_classifier", argv, PATH_KEYS, prepare) as (cfg, config, mlflow):
        started = time.perf_counter()
        output_dir, data_dir = Path(config["output_dir"]), Path(config["data_dir"])
        manifest = load_manifest(data_dir, "labelled")
        vocab, pieces = load_vocab(data_dir, manifest["vocab"]["words"])
        names = manifest["labels"]["names"]
        result = ray_train.fit(train_func_per_worker, config, log_reports=True)
        files = ray_train.read_checkpoint(result.checkpoint, [STATE_FILE, BEST_FILE])
        last, best = files[STATE_FILE], files[BEST_FILE]

        # the best model as a bundle that reads raw text; publish best/ and last/
        model = Classifier(settings_of(config, len(vocab), manifest))
        model.load_state_dict(best["model"])
        model.eval()
        bundle = ClassifierBundle.from_manifest(model, manifest, vocab, pieces)
        bundle.info = {"best_epoch": best["metrics"]["epoch"], "valid_accuracy": best["metrics"]["valid_accuracy"],
                       "mlflow_run_id": config["mlflow_run_id"]}
        with atomic_directory(output_dir, overwrite=config["overwrite"]) as tmp:
            for name, state in (("best", best["model"]), ("last", last["model"])):
                (tmp / name).mkdir()
                bundle.save(tmp / name / CLASSIFIER_FILE, state)
            (tmp / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")

        # the test split's scores, confusion matrix and misclassified examples
        v = config["valid"]
        test, misclassified = {}, []
        if manifest["splits"][v["test_split"]]["examples"]:
            keep_text = manifest["sides"]["words"]["text_column"] is not None
            data = read_labelled(data_dir, manifest["splits"][v["test_split"]]["files"], text=keep_text)
            loss, probabilities = predict(model, data, v["batch_size"])
            predicted = probabilities.argmax(1)
            test = scores("test", loss, data.labels, predicted, len(names))
            test["test_examples"] = len(data)
            misclassified = [{"text": data.text[i] if data.text else None, "label": names[data.labels[i]],
                              "predicted": names[predicted[i]], "probability": round(float(probabilities[i].max()), 4)}
                             for i in np.flatnonzero(predicted != data.labels)[:v["misclassified"]]]
            if config["mlflow"]["enabled"]:
                mlflow.log_figure(confusion_figure(data.labels, predicted, names), "confusion_matrix.png")
        progress = Progress(**last["progress"])
        summary = {"best": str(output_dir / "best"), "last": str(output_dir / "last"),
                   "best_epoch": best["metrics"]["epoch"], "epochs": progress.epoch, "labels": names,
                   **{k: best["metrics"][k] for k in best["metrics"] if k.startswith("valid_")},
                   "train_seconds": round(progress.train_seconds, 1), "train_examples": int(progress.train_examples),
                   "train_examples_per_sec": progress.train_examples / max(progress.train_seconds, 1e-9),
                   "wall_seconds": round(time.perf_counter() - started, 1), **test}

        # MLflow: the summary, the misclassified examples and the best checkpoint
        per_epoch = {"epochs", "best_epoch"} | {k for k in summary if k.startswith("valid_")}
        mlflow.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float)) and k not in per_epoch})
        mlflow.log_text("".join(json.dumps(m, ensure_ascii=False) + "\n" for m in misclassified),
                        "misclassified.jsonl")
        mlflow.log_artifacts(str(output_dir / "best"), "best")
        if config["mlflow"]["enabled"]:  # the model that labels texts (models from code, no pickle)
            info = log_classifier(mlflow, output_dir / "best" / CLASSIFIER_FILE)
            if config["mlflow"]["registry_name"] and test:
                summary["registry"] = publish(mlflow, info.model_uri, bundle, config, manifest, data,
                                              test["test_accuracy"])
        mlflow.set_tag("output_dir", str(output_dir))
    print(json.dumps(summary))
    return summary


def publish(mlflow: Any, model_uri: str, bundle: ClassifierBundle, config: dict[str, Any], manifest: dict[str, Any],
            data: Labelled, accuracy: float) -> dict[str, Any]:
    """Register the logged model under ``mlflow.registry_name``: champion when its test accuracy is
    above the champion's on the same test examples (a champion with another vocabulary or other
    labels stays)."""

    def score_champion(uri: str) -> float | None:
        """The champion's accuracy on this run's test examples, if it reads the same ids and labels."""
        champion = ClassifierBundle.load(uri, tracking_uri=config["mlflow_tracking_uri"])
        if (champion.tokens, champion.kind, champion.pieces, champion.labels) != (
                bundle.tokens, bundle.kind, bundle.pieces, bundle.labels):
            return None
        _, probabilities = predict(champion.model, data, config["valid"]["batch_size"])
        return 100.0 * float(np.mean(probabilities.argmax(1) == data.labels))

    identity = vocab_identity(manifest["vocab"]["words"]) + "\t" + "\t".join(bundle.labels)
    ids = np.concatenate([np.asarray(i, np.int64) for i in data.ids] + [np.zeros(0, np.int64)])
    digest = arrays_digest(identity, data.lengths(), ids, np.asarray(data.labels, np.int64))
    return register(mlflow, model_uri, config["mlflow"]["registry_name"], accuracy, digest, score_champion, ACCURACY)


def confusion_figure(labels: np.ndarray, predicted: np.ndarray, names: Sequence[str]) -> Any:
    """A matplotlib figure of the confusion matrix: true labels by row, predictions by column."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(4.0, 0.8 * len(names) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay.from_predictions(labels, predicted, labels=list(range(len(names))), display_labels=names,
                                            ax=axes, colorbar=False)
    axes.set_title(f"test: {math.fsum(labels == predicted):.0f} of {len(labels)} right")
    figure.tight_layout()
    return figure


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
