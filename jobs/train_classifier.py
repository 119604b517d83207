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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jobs.common import cli
from jobs.common.classifier_checkpoint import CLASSIFIER_FILE, ClassifierBundle
from jobs.common.collectives import worker_log
from jobs.common.driver import Trainer, train
from jobs.common.model_registry import ACCURACY, TestMetric, arrays_digest
from jobs.common.training_loop import Family, LoopSettings
from pipelines.contract.errors import ConfigError, ManifestError, check_integer
from pipelines.contract.labelled_shards import Labelled, read_labelled
from pipelines.contract.manifest import load_manifest
from pipelines.contract.vocab import Vocab, load_vocab, vocab_identity
from rnn_models.batching import epoch_batches, pad, token_batches, worker_batches
from rnn_models.classifier import Classifier, ClassifierSettings
from rnn_models.word_vectors import init_embedding_from

PATH_KEYS = ("data_dir", "output_dir", "embeddings.path")
PRIORS = ("train", "valid")


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
    return ClassifierSettings.from_dict(
        {
            **config["model"],
            "vocab": vocab,
            "classes": len(manifest["labels"]["names"]),
            "label_shift": label_shift(manifest, config["train"]["label_prior"]),
        }
    )


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


def make_batch(
    data: Labelled, index: Sequence[int], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded ids, lengths and label ids of the examples ``index``."""
    ids, lengths = pad([data.ids[i] for i in index], device)
    return ids, lengths, torch.as_tensor(data.labels[np.asarray(index)], device=device)


@torch.no_grad()
def predict(
    model: Classifier, data: Labelled, batch_size: int, device: torch.device | str = "cpu"
) -> tuple[float, np.ndarray]:
    """Mean cross-entropy over ``data`` and each example's label probabilities (N, classes)."""
    was_training = model.training
    model.eval()
    loss, probabilities = 0.0, []
    order = np.argsort(data.lengths(), kind="stable")  # similar lengths together: less padding
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
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
        return token_batches(
            lengths,
            np.zeros_like(lengths),
            train["batch_tokens"],
            seed,
            epoch,  # no target side
            max_sentences=train["batch_size"],
        )
    return epoch_batches(len(lengths), train["batch_size"], seed, epoch)


def scores(prefix: str, loss: float, labels: np.ndarray, predicted: np.ndarray, classes: int) -> dict[str, float]:
    """Loss, accuracy (percent) and macro-F1 (percent) of ``predicted`` label ids against ``labels``."""
    from sklearn.metrics import f1_score

    return {
        f"{prefix}_loss": loss,
        f"{prefix}_accuracy": 100.0 * float(np.mean(predicted == labels)) if len(labels) else 0.0,
        f"{prefix}_macro_f1": 100.0
        * float(f1_score(labels, predicted, labels=list(range(classes)), average="macro", zero_division=0)),
    }


class ClassifierFamily(Family):
    """The classifier in the shared loop: this worker's share of every epoch's batches, cross-entropy
    over the labels, and the valid split's accuracy (the best model has the highest)."""

    metric, higher_is_better, unit = "valid_accuracy", True, "examples"

    def __init__(self, config: dict[str, Any], rank: int, world: int, device: torch.device):
        self.config, self.rank, self.world, self.device = config, rank, world, device
        data_dir = Path(config["data_dir"])
        self.manifest = load_manifest(data_dir, "labelled")
        self.vocab, _ = load_vocab(data_dir, self.manifest["vocab"]["words"])
        self.fingerprint = vocab_identity(self.manifest["vocab"]["words"])
        self.n_labels = len(self.manifest["labels"]["names"])
        self.train = read_labelled(data_dir, self.manifest["splits"]["train"]["files"])
        self.train_lengths = self.train.lengths()  # what every epoch's batches are made from
        self.valid = read_labelled(data_dir, self.manifest["splits"]["valid"]["files"]) if rank == 0 else None

    def build_model(self) -> Classifier:
        return build_model(self.config, self.vocab, self.manifest, log=self.rank == 0)

    def batches(self, epoch: int) -> list[np.ndarray]:
        return worker_batches(
            training_batches(self.train_lengths, self.config["train"], self.config["seed"], epoch),
            self.rank,
            self.world,
        )

    def step(self, batch: np.ndarray, forward: Any) -> tuple[torch.Tensor, float, float]:
        ids, lengths, labels = make_batch(self.train, batch, self.device)
        loss = torch.nn.functional.cross_entropy(forward(ids, lengths).float(), labels)
        return loss, float(loss.detach()) * len(batch), len(batch)

    def validate(self, epoch: int) -> dict[str, Any]:
        loss, probabilities = predict(self.model, self.valid, self.config["valid"]["batch_size"], self.device)
        return scores("valid", loss, self.valid.labels, probabilities.argmax(1), self.n_labels)

    def describe(self, metrics: dict[str, Any]) -> str:
        return (
            f"valid loss {metrics['valid_loss']:.4f} accuracy {metrics['valid_accuracy']:.2f} "
            f"macro-F1 {metrics['valid_macro_f1']:.2f}"
        )


def prepare(config: dict[str, Any]) -> None:
    """Check the config and its input before anything starts."""
    t = config["train"]
    LoopSettings.from_config(config)
    if t["label_prior"] not in PRIORS:
        raise ConfigError(f"train.label_prior must be one of {', '.join(PRIORS)}; got {t['label_prior']!r}")
    for key, low in (("batch_size", 1), ("batch_tokens", 0)):
        check_integer(f"train.{key}", t[key], low)
    if config["valid"]["test_split"] not in ("train", "valid", "test"):
        raise ConfigError(f"valid.test_split must be train, valid or test; got {config['valid']['test_split']!r}")
    manifest = load_manifest(Path(config["data_dir"]), "labelled")
    settings_of(config, 10, manifest)
    for split in ("train", "valid"):
        if not manifest["splits"][split]["examples"]:
            raise ManifestError(f"{config['data_dir']} has no examples in its {split} split: a classifier needs some")
    if config["embeddings"]["path"] and not Path(config["embeddings"]["path"]).exists():
        raise ConfigError(f"embeddings.path: no such file or directory: {config['embeddings']['path']}")


class ClassifierTrainer(Trainer):
    """The classifier's part of the job on the driver: a ``classifier.pt`` bundle that labels raw
    text, the test split's scores, a confusion matrix and the misclassified test examples; champion
    by the highest test accuracy."""

    job, family, checkpoint_file = "train_classifier", ClassifierFamily, CLASSIFIER_FILE
    path_keys = PATH_KEYS
    prepare = staticmethod(prepare)

    def __init__(self, cfg: Any, config: dict[str, Any], mlflow: Any):
        super().__init__(cfg, config, mlflow)
        self.manifest = load_manifest(self.data_dir, "labelled")
        self.vocab, self.pieces = load_vocab(self.data_dir, self.manifest["vocab"]["words"])
        self.names = self.manifest["labels"]["names"]
        self.data: Labelled | None = None  # the test split
        self.predicted = np.zeros(0, np.int64)
        self.probabilities = np.zeros((0, len(self.names)), np.float32)

    def bundle(self, best: dict[str, Any]) -> ClassifierBundle:
        model = Classifier(settings_of(self.config, len(self.vocab), self.manifest))
        model.load_state_dict(best["model"])
        model.eval()
        bundle = ClassifierBundle.from_manifest(model, self.manifest, self.vocab, self.pieces)
        bundle.info = {
            "best_epoch": best["metrics"]["epoch"],
            "valid_accuracy": best["metrics"]["valid_accuracy"],
            "mlflow_run_id": self.config["mlflow_run_id"],
        }
        return bundle

    def test(self, bundle: ClassifierBundle) -> dict[str, Any]:
        v = self.config["valid"]
        split = self.manifest["splits"][v["test_split"]]
        if not split["examples"]:
            return {}
        keep_text = self.manifest["sides"]["words"]["text_column"] is not None
        self.data = data = read_labelled(self.data_dir, split["files"], text=keep_text)
        loss, probabilities = predict(bundle.model, data, v["batch_size"])
        self.predicted, self.probabilities = probabilities.argmax(1), probabilities
        identity = vocab_identity(self.manifest["vocab"]["words"]) + "\t" + "\t".join(bundle.labels)
        ids = np.concatenate([np.asarray(i, np.int64) for i in data.ids] + [np.zeros(0, np.int64)])
        return {
            **scores("test", loss, data.labels, self.predicted, len(self.names)),
            "test_examples": len(data),
            "test_set": arrays_digest(identity, data.lengths(), ids, np.asarray(data.labels, np.int64)),
        }

    def summary_extras(self, bundle: ClassifierBundle) -> dict[str, Any]:
        return {"labels": self.names}

    def log_extras(self, bundle: ClassifierBundle, test: dict[str, Any]) -> None:
        data, names, predicted = self.data, self.names, self.predicted
        misclassified = (
            []
            if data is None
            else [
                {
                    "text": data.text[i] if data.text else None,
                    "label": names[data.labels[i]],
                    "predicted": names[predicted[i]],
                    "probability": round(float(self.probabilities[i].max()), 4),
                }
                for i in np.flatnonzero(predicted != data.labels)[: self.config["valid"]["misclassified"]]
            ]
        )
        self.mlflow.log_text(
            "".join(json.dumps(m, ensure_ascii=False) + "\n" for m in misclassified), "misclassified.jsonl"
        )
        if data is not None and self.config["mlflow"]["enabled"]:
            self.mlflow.log_figure(confusion_figure(data.labels, predicted, names), "confusion_matrix.png")

    def test_metric(self, bundle: ClassifierBundle) -> TestMetric:
        return ACCURACY

    def score_champion(self, uri: str, bundle: ClassifierBundle) -> float | None:
        """The champion's accuracy on this run's test examples, if it reads the same ids and labels."""
        champion = ClassifierBundle.load(uri, tracking_uri=self.config["mlflow_tracking_uri"])
        if (champion.tokens, champion.kind, champion.pieces, champion.labels) != (
            bundle.tokens,
            bundle.kind,
            bundle.pieces,
            bundle.labels,
        ):
            return None
        _, probabilities = predict(champion.model, self.data, self.config["valid"]["batch_size"])
        return 100.0 * float(np.mean(probabilities.argmax(1) == self.data.labels))


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the job; returns the summary it prints last."""
    return train(ClassifierTrainer, argv)


def confusion_figure(labels: np.ndarray, predicted: np.ndarray, names: Sequence[str]) -> Any:
    """A matplotlib figure of the confusion matrix: true labels by row, predictions by column."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(4.0, 0.8 * len(names) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay.from_predictions(
        labels, predicted, labels=list(range(len(names))), display_labels=names, ax=axes, colorbar=False
    )
    axes.set_title(f"test: {math.fsum(labels == predicted):.0f} of {len(labels)} right")
    figure.tight_layout()
    return figure


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
