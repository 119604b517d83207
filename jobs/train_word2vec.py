"""Train word2vec (skip-gram or CBOW, NCE) data-parallel on Ray Train; export and evaluate the vectors.

    python -m jobs.train_word2vec [CONFIG.yaml] data_dir=DIR output_dir=DIR [key=value ...]

Each worker trains on its own contiguous share of the token stream with plain SGD and sparse
in-place updates: on CPU a loop in C (each centre's window as one block, or word2vec.c's pair by
pair: ``model.update``), run by ``cpus_per_worker`` threads that share the worker's tables
(``train.loop``); on GPU one tensor step per batch. Every ``train.sync_every`` steps the workers
add up their updates with an all-reduce (gloo on CPU, NCCL on GPU). Doing that every step would
be synchronous data-parallel SGD, at the price of all-reducing both embedding tables per step (see
bench/README.md for what that costs). Rank 0 scores the vectors at every checkpoint; the driver
exports the final checkpoint's vectors with those scores and logs everything to MLflow.
Prints the resolved config, progress, and last one line of JSON.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from jobs.common import cli, ray_train
from jobs.common.collectives import all_reduce_sum, check_replicas, worker_log, world
from jobs.common.config import ConfigError
from jobs.common.reports import evaluate, projection_plot
from jobs.common.tracking import MetricsLog
from pipelines.contract.atomic import atomic_directory
from pipelines.contract.errors import CheckpointError, ManifestError
from pipelines.contract.manifest import load_manifest
from pipelines.contract.pieces import word_forms
from pipelines.contract.specials import SPECIALS, STRUCTURAL_IDS
from pipelines.contract.token_stream import read_token_share
from pipelines.contract.vocab import Vocab, load_vocab
from rnn_models import word2vec_native
from rnn_models.skipgram import Word2Vec, Word2VecSettings, keep_probabilities, linear_lr, training_stream
from rnn_models.word_vectors import save_word2vec

# Config keys holding paths, made absolute on the driver (jobs.tune uses them too).
PATH_KEYS = ("data_dir", "output_dir", "data_root", "eval.analogy", "eval.similarity")
# A Ray Train checkpoint of this job: the model and where to go on from (state.pt), its scores (eval.json).
STATE_FILE = "state.pt"
EVAL_FILE = "eval.json"
LOOPS = ("auto", "c", "tensor")
SYNC_ROWS = ("all", "touched")


def settings_of(config: dict[str, Any], vocab_size: int) -> Word2VecSettings:
    """The model settings a config describes, for a vocabulary of ``vocab_size`` entries."""
    return Word2VecSettings.from_dict({**config["model"], "vocab_size": vocab_size})


def native_loop(choice: str, device: torch.device) -> bool:
    """Whether to train with the C loop: ``c`` insists (CPU only), ``tensor`` never, ``auto`` on CPU
    when the loop builds here (else the tensor step, with a warning)."""
    if choice == "tensor":
        return False
    if device.type != "cpu":
        if choice == "c":
            raise ConfigError(f"train.loop=c runs on CPU only; use train.loop=auto or tensor on {device.type}")
        return False
    if choice == "c":
        word2vec_native.library()  # raises NativeUnavailable with the reason
        return True
    if not word2vec_native.available():
        worker_log("warning: the C loop could not be built here; training with the (slower) tensor step")
        return False
    return True


class UpdateSync:
    """Combines the workers' models every few steps: each gets the sum of all workers' updates
    since the last sync, as if they had written to shared tables (like gensim's threads).
    Averaging instead would count each worker's progress only 1/world.

    ``rows="touched"`` all-reduces only the table rows some worker changed since the last sync
    (found by all-reducing a mask of each worker's changed rows first); ``"all"`` all-reduces whole
    tables. Both give the same tables. ``sent`` counts the bytes this worker put into all-reduces."""

    def __init__(self, model: torch.nn.Module, rows: str = "all"):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.anchors = [p.detach().clone() for p in self.params] if world()[1] > 1 else []
        self.rows, self.sent, self.syncs = rows, 0, 0

    def __call__(self) -> None:
        for p, anchor in zip(self.params, self.anchors):
            delta = p.data - anchor
            if self.rows == "all":
                anchor.add_(all_reduce_sum(delta))
                p.data.copy_(anchor)
                self.sent += delta.numel() * delta.element_size()
                continue
            changed = all_reduce_sum(delta.ne(0).flatten(1).any(1).to(torch.int32))
            rows = changed.nonzero().squeeze(1)
            update = all_reduce_sum(delta[rows])
            anchor.index_add_(0, rows, update)
            p.data[rows] = anchor[rows]  # rows no worker changed are equal to their anchor already
            self.sent += changed.numel() * changed.element_size() + update.numel() * update.element_size()
        self.syncs += len(self.anchors) > 0

    @property
    def megabytes_per_sync(self) -> float:
        """Mean MB this worker all-reduced per sync so far (0 with one worker)."""
        return self.sent / 2**20 / max(self.syncs, 1)


@dataclass
class Position:
    """Where training goes on from: the epoch and the step within it (what a checkpoint stores)."""

    epoch: int = 0
    step: int = 0


def restore(state: dict[str, Any], model: Word2Vec) -> Position:
    """Load a checkpoint's model; refuses one of another model (settings or vocabulary)."""
    saved = state.get("settings")
    if saved is not None and saved != model.settings.to_dict():
        raise CheckpointError(
            f"the checkpoint is of another model ({saved}; this config: "
            f"{model.settings.to_dict()}): use another run_name, resume=false to start over, "
            "or the same model settings"
        )
    model.load_state_dict(state["model"])
    return Position(state["epoch"], state["step"])


class Word2VecTraining:
    """One worker's training: its share of the stream, the model, and the steps of an epoch."""

    def __init__(self, config: dict[str, Any], rank: int, world: int, device: torch.device):
        self.config, self.rank, self.world, self.device = config, rank, world, device
        t = self.t = config["train"]
        self.threads = max(1, int(t["cpus_per_worker"]))
        torch.set_num_threads(self.threads)
        self.native = native_loop(t["loop"], device)
        if rank == 0:
            worker_log(
                f"training with {f'the C loop on {self.threads} threads' if self.native else 'the tensor step'} "
                f"per worker on {device}, {world} workers"
            )
        vocab = Vocab.load(Path(config["vocab_file"]))
        # the entries as words, for the evaluation sets (pieces: their whole-word forms)
        self.words = word_forms(vocab.tokens) if config["piece_model"] else vocab.tokens
        share = read_token_share(Path(config["data_dir"]), config["train_files"], rank, world, t["max_words"])
        self.tokens = torch.from_numpy(share.tokens).to(device)
        self.sentences = torch.from_numpy(share.sentences).to(device)
        torch.manual_seed(config["seed"])  # the same initial parameters on every worker
        self.model = Word2Vec(settings_of(config, len(vocab)), vocab.counts).to(device)
        self.keep = keep_probabilities(torch.tensor(vocab.counts), t["sample"]).to(device)
        self.steps = max(1, math.ceil(share.total / world / t["batch_words"]))  # the same on every worker
        self.position = Position()
        self.sync = UpdateSync(self.model, t["sync_rows"])
        self.log_metrics = MetricsLog.for_rank(config, rank)
        self.generator = torch.Generator(device=device)
        # loss, terms and words since the last report; words and seconds of this attempt (a resumed run starts over)
        self.stats = torch.zeros(3, dtype=torch.float64, device=device)
        self.words_done, self.loop_seconds = 0.0, 0.0
        self.last_report = time.perf_counter()

    def restore(self, checkpoint: Any) -> None:
        """Go on from a Ray Train checkpoint (None: start afresh)."""
        if checkpoint is None:
            return
        state = ray_train.read_checkpoint(checkpoint, [STATE_FILE], self.device)[STATE_FILE]
        try:
            self.position = restore(state, self.model)
        except CheckpointError as err:
            raise CheckpointError(f"run {self.config['run_name']!r}: {err}") from None
        self.sync = UpdateSync(self.model, self.t["sync_rows"])  # the anchors follow the restored tables
        if self.rank == 0:
            worker_log(f"resumed from epoch {self.position.epoch}, step {self.position.step}")

    def train_epoch(self, epoch: int) -> None:
        """This worker's steps of one epoch: SGD on a chunk of the stream per step, the workers'
        updates added up every ``sync_every`` steps, reports and checkpoints at sync points."""
        t = self.t
        total_steps = self.steps * t["epochs"]
        checkpoint_every = t["checkpoint_every"] or self.steps
        first = self.position.step if epoch == self.position.epoch else 0
        bar = ray_train.epoch_bar(self.config, self.rank, epoch, self.steps)
        if bar is not None:
            bar.update(first)
        for step in range(first, self.steps):
            if bar is not None:
                bar.update(1)
            done = epoch * self.steps + step
            self.generator.manual_seed(hash((self.config["seed"], epoch, self.rank, step)) & 0x7FFF_FFFF_FFFF)
            lr = linear_lr(t["lr"], done / total_steps, t["min_lr"] / t["lr"])
            self._sgd(step, lr)
            last = step + 1 == self.steps
            save = (step + 1) % checkpoint_every == 0 or last
            if (step + 1) % t["sync_every"] == 0 or save:
                self.sync()
                if save:
                    check_replicas(self.model, self.device)
                if self._report_due(save):
                    resume = Position(epoch + 1, 0) if last else Position(epoch, step + 1)
                    self._report(epoch, (done + 1) / total_steps, lr, done + 1, resume if save else None)
        if bar is not None:
            bar.close()

    def _sgd(self, step: int, lr: float) -> None:
        """One step: subsample the step's chunk, draw windows and noise, update the tables."""
        lo = step * self.t["batch_words"]
        chunk = self.tokens[lo : lo + self.t["batch_words"]]
        if not chunk.numel():
            return
        stream = training_stream(
            chunk.long(), self.sentences[lo : lo + self.t["batch_words"]], self.keep, self.t["window"], self.generator
        )
        noise = self.model.draw_noise(stream, self.generator)
        loss, terms = self.model.train_step(stream, noise, lr, self.native, self.threads)
        self.stats += torch.tensor([loss, terms, chunk.numel()], dtype=torch.float64, device=self.device)

    def _report_due(self, save: bool) -> bool:
        """Whether to report now: at every checkpoint, else when rank 0's clock says so (the same
        answer on every worker)."""
        due = time.perf_counter() - self.last_report >= self.t["report_seconds"] or save
        return all_reduce_sum(torch.tensor([float(due)], dtype=torch.float64, device=self.device)).item() > 0

    def _report(self, epoch: int, progress: float, lr: float, global_step: int, resume: Position | None) -> None:
        """Progress to MLflow; with ``resume`` (a checkpoint is due) a report to Ray Train, rank 0's
        with a checkpoint holding the model, its scores and the settings a resumed run must match."""
        import ray.train

        totals = all_reduce_sum(self.stats.clone()).tolist()
        elapsed = time.perf_counter() - self.last_report
        self.words_done, self.loop_seconds = self.words_done + totals[2], self.loop_seconds + elapsed
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "progress": progress,
            "lr": lr,
            "loss": totals[0] / max(totals[1], 1),
            "words_per_sec": totals[2] / elapsed,
            "words": self.words_done,
            "train_loop_seconds": self.loop_seconds,
            "sync_mb": self.sync.megabytes_per_sync,
        }
        scores = None
        if resume and self.rank == 0:  # every checkpoint carries its scores (what jobs.tune ranks by)
            scores = evaluate(*exported(self.words, self.model.input.weight.detach().cpu()), self.config["eval"])
            metrics.update(flat_scores(scores))
        if self.log_metrics is not None:
            self.log_metrics(metrics, global_step)
            worker_log(
                f"epoch {epoch} progress {progress:.1%} loss {metrics['loss']:.4f} "
                f"lr {lr:.5f} {metrics['words_per_sec']:,.0f} words/s"
            )
        if resume and self.rank == 0:
            with tempfile.TemporaryDirectory() as directory:
                torch.save(
                    {"model": self.model.state_dict(), **asdict(resume), "settings": self.model.settings.to_dict()},
                    Path(directory) / STATE_FILE,
                )
                (Path(directory) / EVAL_FILE).write_text(
                    json.dumps(scores, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
                )
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
        elif resume:
            ray.train.report(metrics)
        self.stats.zero_()
        self.last_report = time.perf_counter()


def train_func_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker loop: restore, then train this worker's share epoch by epoch."""
    from ray.train.torch import get_device

    rank, size = world()
    training = Word2VecTraining(config, rank, size, get_device())
    training.restore(ray_train.resumable_checkpoint())
    for epoch in range(training.position.epoch, config["train"]["epochs"]):
        training.train_epoch(epoch)


def exported(tokens: Sequence[str], weight: torch.Tensor) -> tuple[list[str], torch.Tensor]:
    """The words and vectors the job exports: every vocabulary entry but the structural specials
    ([PAD], <go>, <eos>)."""
    keep = [i for i in range(len(tokens)) if i not in STRUCTURAL_IDS]
    return [tokens[i] for i in keep], weight[keep]


def prepare(config: dict[str, Any]) -> None:
    """Check the config and add the training inputs from the manifest."""
    if config["train"]["loop"] not in LOOPS:
        raise ConfigError(f"train.loop must be one of {', '.join(LOOPS)}, got {config['train']['loop']!r}")
    if config["train"]["sync_rows"] not in SYNC_ROWS:
        raise ConfigError(
            f"train.sync_rows must be one of {', '.join(SYNC_ROWS)}, got {config['train']['sync_rows']!r}"
        )
    settings_of(config, len(SPECIALS))  # the settings, before any data is read
    manifest = load_manifest(Path(config["data_dir"]), "monolingual")
    entry = manifest["vocab"]["words"]
    load_vocab(Path(config["data_dir"]), entry)  # refuses a vocabulary or piece model the shards were not made with
    config["vocab_file"] = str(Path(config["data_dir"]) / entry["file"])
    config["piece_model"] = str(Path(config["data_dir"]) / entry["model"]) if entry.get("model") else None
    config["train_files"] = manifest["splits"]["train"]["files"]
    if not config["train_files"]:
        raise ManifestError(f"{config['data_dir']} has no train shards")


def fit(config: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Run the Ray Train job; returns the final model state, its scores and the last reported metrics."""
    result = ray_train.fit(train_func_per_worker, config)
    checkpoint = ray_train.whole_checkpoint(result.checkpoint)
    state = ray_train.read_checkpoint(checkpoint, [STATE_FILE])[STATE_FILE]["model"]
    with checkpoint.as_directory() as directory:
        scores = json.loads((Path(directory) / EVAL_FILE).read_text(encoding="utf-8"))
    return state, scores, dict(result.metrics or {})


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the job; returns the summary it prints last."""
    with ray_train.training_run("train_word2vec", argv, PATH_KEYS, prepare) as (_, config, mlflow):
        output_dir = Path(config["output_dir"])
        vocab = Vocab.load(Path(config["vocab_file"]))
        started = time.perf_counter()
        state, scores, last = fit(config)
        train_seconds = time.perf_counter() - started
        words_per_sec = last.get("words", 0) / last["train_loop_seconds"] if last.get("train_loop_seconds") else None
        words, vectors = exported(vocab.tokens, state["input.weight"])
        with atomic_directory(output_dir, overwrite=config["overwrite"]) as tmp:
            save_word2vec(tmp / "vectors.txt", words, vectors)
            save_word2vec(tmp / "vectors.bin", words, vectors, binary=True)
            shutil.copyfile(config["vocab_file"], tmp / "vocab.tsv")
            if config["piece_model"]:  # vectors of pieces: the model that segments text into them
                shutil.copyfile(config["piece_model"], tmp / "pieces.model")
            (tmp / "eval.json").write_text(json.dumps(scores, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            projection_plot(words, vectors, config["eval"]["plot_words"], tmp / "projection.png")
        mlflow.log_metrics(
            {
                "train_seconds": train_seconds,
                **flat_scores(scores),
                **({"train_words_per_sec": words_per_sec} if words_per_sec else {}),
            }
        )
        mlflow.log_artifacts(str(output_dir), "vectors")
        mlflow.set_tag("output_dir", str(output_dir))
    summary = {
        "output_dir": str(output_dir),
        "vectors": str(output_dir / "vectors.txt"),
        "words": len(words),
        "dim": int(vectors.shape[1]),
        "train_seconds": round(train_seconds, 2),
        "train_words": int(last.get("words", 0)),
        "words_per_sec": words_per_sec,
        "sync_mb": last.get("sync_mb"),
        **{k: v for k, v in scores.items() if k != "neighbours"},
    }
    print(json.dumps(summary))
    return summary


def flat_scores(scores: dict[str, Any]) -> dict[str, float]:
    """``{"analogy": {"accuracy": x}}`` -> ``{"analogy.accuracy": x}``, numbers only, for MLflow."""
    return {
        f"{group}.{name}": value
        for group in ("analogy", "similarity")
        if group in scores
        for name, value in scores[group].items()
        if isinstance(value, (int, float)) and not math.isnan(value)
    }


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
