"""Train word2vec (skip-gram or CBOW, NCE) data-parallel on Ray Train; export and evaluate the vectors.

    python -m jobs.train_word2vec [CONFIG.yaml] data_dir=DIR output_dir=DIR [key=value ...]

Each worker trains on its own contiguous share of the token stream with plain SGD and sparse
in-place updates: on CPU word2vec's pair-by-pair loop in C, run by ``cpus_per_worker`` threads
that share the worker's tables (``train.loop``); on GPU one tensor step per batch. Every
``train.sync_every`` steps the workers add up their updates with an all-reduce (gloo on CPU, NCCL
on GPU). Doing that every step would be synchronous data-parallel SGD, at the price of
all-reducing both embedding tables per step (see bench/README.md for what that costs). Rank 0
scores the vectors at every checkpoint; the driver exports the final checkpoint's vectors with
those scores and logs everything to MLflow.
Prints the resolved config, progress, and last one line of JSON.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from jobs import ray_train
from jobs.config import ConfigError, load_config, to_dict, to_yaml
from jobs.ray_train import MetricsLog, all_reduce_sum, resolve_paths, worker_log
from jobs.tracking import mlflow_run
from jobs.word2vec_report import evaluate, projection_plot
from pipelines.manifest import ManifestError, load_manifest
from pipelines.atomic import OutputExistsError, atomic_directory
from pipelines.token_stream import read_token_share
from pipelines.vocab import Vocab
from rnn_models.nce import NEVER_NOISE, noise_distribution
from rnn_models import word2vec_native
from rnn_models.skipgram import Word2Vec, keep_probabilities, linear_lr, training_stream
from rnn_models.word_vectors import save_word2vec

STATE_FILE = "state.pt"
EVAL_FILE = "eval.json"  # the checkpoint's scores, written by rank 0 with it
LOOPS = ("auto", "c", "tensor")


def build_model(config: dict[str, Any], counts: Sequence[int]) -> Word2Vec:
    """The model a config describes, for a vocabulary with these counts."""
    m = config["model"]
    probs = noise_distribution(counts, m["noise_power"], exclude_placeholders=not m["placeholder_noise"])
    return Word2Vec(len(counts), m["dim"], probs, m["negatives"], m["loss"], m["cbow"], m["noise_block"])


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
    Averaging instead would count each worker's progress only 1/world."""

    def __init__(self, model: torch.nn.Module):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.anchors = [p.detach().clone() for p in self.params] if ray_train.world()[1] > 1 else []

    def __call__(self) -> None:
        for p, anchor in zip(self.params, self.anchors):
            update = all_reduce_sum(p.data - anchor)
            p.data.copy_(anchor.add_(update))


def train_func_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker loop: train on this worker's share, sync, report, checkpoint."""
    import ray.train
    from ray.train.torch import get_device

    rank, world = ray_train.world()
    device = get_device()
    t = config["train"]
    threads = max(1, int(t["cpus_per_worker"]))
    torch.set_num_threads(threads)
    native = native_loop(t["loop"], device)
    if rank == 0:
        worker_log(f"training with {f'the C loop on {threads} threads' if native else 'the tensor step'} "
                   f"per worker on {device}, {world} workers")
    vocab = Vocab.load(Path(config["vocab_file"]))
    counts, tokens_of_vocab = vocab.counts, vocab.tokens
    share = read_token_share(Path(config["data_dir"]), config["train_files"], rank, world, t["max_words"])
    tokens = torch.from_numpy(share.tokens).to(device)
    sentences = torch.from_numpy(share.sentences).to(device)
    torch.manual_seed(config["seed"])  # same initial parameters on every worker
    model = build_model(config, counts).to(device)
    keep = keep_probabilities(torch.tensor(counts), t["sample"]).to(device)

    steps = max(1, math.ceil(share.total / world / t["batch_words"]))  # the same on every worker
    total_steps = steps * t["epochs"]
    start_epoch, start_step = 0, 0
    settings = {**config["model"], "vocab_size": len(counts)}  # what a checkpoint must match to resume
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            state = torch.load(Path(directory) / STATE_FILE, map_location=device, weights_only=True)
        if state.get("settings", settings) != settings:
            raise ConfigError(f"run {config['run_name']!r} has a checkpoint of another model ({state['settings']}; "
                              f"this config: {settings}): use another run_name, resume=false to start over, "
                              "or the same model settings")
        model.load_state_dict(state["model"])
        start_epoch, start_step = state["epoch"], state["step"]

    sync = UpdateSync(model)
    log_metrics = MetricsLog.for_rank(config, rank)
    generator = torch.Generator(device=device)
    window, batch_words, sync_every = t["window"], t["batch_words"], t["sync_every"]
    checkpoint_every = t["checkpoint_every"] or steps
    stats = torch.zeros(3, dtype=torch.float64, device=device)  # loss, terms, words since the last report
    words_done, loop_seconds = 0.0, 0.0  # by all workers, in this attempt (a resumed run starts over)
    last_report = time.perf_counter()
    for epoch in range(start_epoch, t["epochs"]):
        for step in range(start_step if epoch == start_epoch else 0, steps):
            done = epoch * steps + step
            generator.manual_seed(hash((config["seed"], epoch, rank, step)) & 0x7FFF_FFFF_FFFF)
            lo = step * batch_words
            chunk, chunk_sentences = tokens[lo:lo + batch_words], sentences[lo:lo + batch_words]
            lr = linear_lr(t["lr"], done / total_steps, t["min_lr"] / t["lr"])
            if chunk.numel():
                stream = training_stream(chunk.long(), chunk_sentences, keep, window, generator)
                loss, terms = model.train_step(stream, model.draw_noise(stream, generator), lr, native, threads)
                stats += torch.tensor([loss, terms, chunk.numel()], dtype=torch.float64, device=device)
            last = step + 1 == steps
            save = (step + 1) % checkpoint_every == 0 or last
            if (step + 1) % sync_every == 0 or save:
                sync()
                flag = torch.tensor([float(time.perf_counter() - last_report >= t["report_seconds"] or save)],
                                    dtype=torch.float64, device=device)
                if all_reduce_sum(flag).item() > 0:  # rank 0's clock decides, for every worker alike
                    totals = all_reduce_sum(stats.clone()).tolist()
                    elapsed = time.perf_counter() - last_report
                    words_done, loop_seconds = words_done + totals[2], loop_seconds + elapsed
                    metrics = {"epoch": epoch, "progress": (done + 1) / total_steps, "lr": lr,
                               "loss": totals[0] / max(totals[1], 1), "words_per_sec": totals[2] / elapsed,
                               "words": words_done, "train_loop_seconds": loop_seconds}
                    resume = (epoch + 1, 0) if last else (epoch, step + 1)
                    scores = None
                    if save and rank == 0:  # every checkpoint carries its scores (what jobs.tune ranks by)
                        scores = evaluate(*exported(tokens_of_vocab, model.input.weight.detach().cpu()),
                                          config["eval"])
                        metrics.update(_flat_scores(scores))
                    _report(metrics, model, resume if save else None, rank, log_metrics, done + 1, scores, settings)
                    stats.zero_()
                    last_report = time.perf_counter()


def exported(tokens: Sequence[str], weight: torch.Tensor) -> tuple[list[str], torch.Tensor]:
    """The words and vectors the job exports: every vocabulary entry but [PAD], <go> and <eos>."""
    keep = [i for i in range(len(tokens)) if i not in NEVER_NOISE]
    return [tokens[i] for i in keep], weight[keep]


def _report(metrics: dict[str, float], model: Word2Vec, resume: tuple[int, int] | None, rank: int,
            log_metrics: MetricsLog | None, global_step: int, scores: dict[str, Any] | None = None,
            settings: dict[str, Any] | None = None) -> None:
    """Log progress to MLflow; with ``resume`` (the epoch and step to go on from), report to Ray
    Train too, rank 0 with a checkpoint holding the model, its ``scores`` and the ``settings`` a
    resumed run must match. Ray Train (and Tune) see checkpoints only."""
    import ray.train

    if log_metrics is not None:
        log_metrics(metrics, global_step)
        worker_log(f"epoch {metrics['epoch']} progress {metrics['progress']:.1%} loss {metrics['loss']:.4f} "
                   f"lr {metrics['lr']:.5f} {metrics['words_per_sec']:,.0f} words/s")
    if resume and rank == 0:
        with tempfile.TemporaryDirectory() as directory:
            torch.save({"model": model.state_dict(), "epoch": resume[0], "step": resume[1], "settings": settings},
                       Path(directory) / STATE_FILE)
            (Path(directory) / EVAL_FILE).write_text(json.dumps(scores, indent=2, ensure_ascii=False) + "\n",
                                                     encoding="utf-8")
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
    elif resume:
        ray.train.report(metrics)


def _resolve(config: dict[str, Any]) -> dict[str, Any]:
    """Absolute paths (workers run elsewhere) and the training inputs from the manifest."""
    resolve_paths(config)
    if config["train"]["loop"] not in LOOPS:
        raise ConfigError(f"train.loop must be one of {', '.join(LOOPS)}, got {config['train']['loop']!r}")
    manifest = load_manifest(Path(config["data_dir"]), "monolingual")
    config["vocab_file"] = str(Path(config["data_dir"]) / manifest["vocab"]["words"]["file"])
    config["train_files"] = manifest["splits"]["train"]["files"]
    if not config["train_files"]:
        raise ManifestError(f"{config['data_dir']} has no train shards")
    for key in ("analogy", "similarity"):
        if config["eval"][key]:
            config["eval"][key] = str(Path(config["eval"][key]).resolve())
    return config


def fit(config: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Run the Ray Train job; returns the final model state, its scores and the last reported metrics."""
    result = ray_train.fit(train_func_per_worker, config)
    with result.checkpoint.as_directory() as directory:
        state = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)["model"]
        scores = json.loads((Path(directory) / EVAL_FILE).read_text(encoding="utf-8"))
    return state, scores, dict(result.metrics or {})


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the job; returns the summary it prints last."""
    cfg = load_config("train_word2vec", argv)
    print(to_yaml(cfg), flush=True)
    config = _resolve(to_dict(cfg))
    output_dir = Path(config["output_dir"])
    if output_dir.exists() and not config["overwrite"]:
        raise OutputExistsError(f"{output_dir} exists; pass overwrite=true to replace it")
    vocab = Vocab.load(Path(config["vocab_file"]))
    started = time.perf_counter()
    with mlflow_run(config["mlflow"], config["run_name"], params=to_dict(cfg)) as mlflow:
        mlflow.log_text(to_yaml(cfg), "config.yaml")
        ray_train.start(config, mlflow)
        state, scores, last = fit(config)
        train_seconds = time.perf_counter() - started
        words_per_sec = last.get("words", 0) / last["train_loop_seconds"] if last.get("train_loop_seconds") else None
        words, vectors = exported(vocab.tokens, state["input.weight"])
        with atomic_directory(output_dir, overwrite=config["overwrite"]) as tmp:
            save_word2vec(tmp / "vectors.txt", words, vectors)
            save_word2vec(tmp / "vectors.bin", words, vectors, binary=True)
            shutil.copyfile(config["vocab_file"], tmp / "vocab.tsv")
            (tmp / "eval.json").write_text(json.dumps(scores, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            projection_plot(words, vectors, config["eval"]["plot_words"], tmp / "projection.png")
        mlflow.log_metrics({"train_seconds": train_seconds, **_flat_scores(scores),
                            **({"train_words_per_sec": words_per_sec} if words_per_sec else {})})
        mlflow.log_artifacts(str(output_dir), "vectors")
        mlflow.set_tag("output_dir", str(output_dir))
    summary = {"output_dir": str(output_dir), "vectors": str(output_dir / "vectors.txt"),
               "words": len(words), "dim": int(vectors.shape[1]), "train_seconds": round(train_seconds, 2),
               "train_words": int(last.get("words", 0)), "words_per_sec": words_per_sec,
               **{k: v for k, v in scores.items() if k != "neighbours"}}
    print(json.dumps(summary))
    return summary


def _flat_scores(scores: dict[str, Any]) -> dict[str, float]:
    return {f"{group}.{name}": value for group in ("analogy", "similarity") if group in scores
            for name, value in scores[group].items() if isinstance(value, (int, float)) and not math.isnan(value)}


def main() -> None:
    try:
        run()
    except (ConfigError, ManifestError, OutputExistsError, word2vec_native.NativeUnavailable) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
