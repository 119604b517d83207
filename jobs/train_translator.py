"""Train the encoder-decoder translator data-parallel on Ray Train; keep the best and last models.

    python -m jobs.train_translator [CONFIG.yaml] data_dir=DIR output_dir=DIR [key=value ...]

Every worker reads the training pairs and takes every ``num_workers``-th of the same length-bucketed
batches; DDP averages the gradients (gloo on CPU, NCCL on GPU). After each epoch rank 0 validates
(loss, perplexity, greedy BLEU and chrF on the raw references) and reports a checkpoint holding the
training state and the best model so far; the controller logs each epoch's report to MLflow once its
checkpoint is stored. A rerun with the same ``run_name`` resumes from it. The driver then publishes
``output_dir/best`` and ``output_dir/last``, scores the test split greedily and with beam search, and
logs it all to MLflow. The last line printed is a JSON summary.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from jobs import ray_train
from jobs.config import PROJECT_DIR, ConfigError, load_config, to_dict, to_yaml
from jobs.ray_train import MetricsLog, broadcast, resolve_paths, worker_log
from jobs.tracking import mlflow_run
from jobs.translation import BUNDLE_FILE, Bundle, translate, translate_and_score
from pipelines.manifest import ManifestError, load_manifest
from pipelines.atomic import OutputExistsError, atomic_directory
from pipelines.parallel_shards import Pairs, read_pairs
from pipelines.vocab import EOS_ID, UNK_ID, Vocab
from rnn_models.batching import pad, token_batches, worker_batches
from rnn_models.translator import Translator, TranslatorSettings, frame_target, sequence_loss
from rnn_models.word_vectors import init_embedding, load_word2vec

STATE_FILE, BEST_FILE = "state.pt", "best.pt"


def build_model(config: dict[str, Any], src: Vocab, tgt: Vocab, sentences: int, quiet: bool = False) -> Translator:
    """The translator a config describes for ``sentences`` training pairs, with pretrained
    embeddings loaded (and their coverage printed unless ``quiet``) where configured."""
    settings = TranslatorSettings.from_dict({**config["model"], "src_vocab": len(src), "tgt_vocab": len(tgt)})
    model = Translator(settings)
    model.init_output_bias(tgt.counts[:EOS_ID] + (sentences,) + tgt.counts[EOS_ID + 1:])
    e = config["embeddings"]
    for side, vocab, embedding in (("src", src, model.encoder.embedding), ("tgt", tgt, model.decoder.embedding)):
        if e[side]:
            path = Path(e[side])
            file = path / "vectors.txt" if path.is_dir() else path
            words, vectors = load_word2vec(file, binary=file.suffix == ".bin")
            coverage = init_embedding(embedding, vocab.tokens, words, vectors, e["freeze"], rescale=e["rescale"])
            if not quiet:
                worker_log(f"{side} embeddings from {file}: {coverage.exact} tokens matched, {coverage.lowercased} "
                           f"by their lowercase form, {coverage.missing} initialised randomly "
                           f"(e.g. {coverage.missing_examples[:8]}), scaled by {coverage.scale:.4g}; "
                           f"{'frozen' if e['freeze'] else 'fine-tuned'}")
    return model


def _batch(pairs: Pairs, index: Sequence[int], device: torch.device) -> tuple[torch.Tensor, ...]:
    src, src_len = pad([pairs.src[i] for i in index], device)
    tgt, _ = pad([pairs.tgt[i] for i in index], device)
    return src, src_len, *frame_target(tgt)


def validate(model: Translator, bundle: Bundle, valid: Pairs, config: dict[str, Any], device: torch.device
             ) -> tuple[dict[str, Any], list[Any]]:
    """Validation loss, perplexity, greedy BLEU and chrF; also returns the translations."""
    model.eval()
    loss_sum, tokens = 0.0, 0
    src_len, tgt_len = valid.lengths()
    with torch.no_grad():
        for index in token_batches(src_len, tgt_len, config["train"]["batch_tokens"], 0, 0):
            src, lengths, tgt_in, tgt_out = _batch(valid, index, device)
            logits, _ = model(src, lengths, tgt_in)
            loss, n = sequence_loss(logits, tgt_out)
            loss_sum, tokens = loss_sum + float(loss), tokens + n
    scores, translations = translate_and_score(bundle, valid.src_text, valid.tgt_text, config["decode"], 1, device)
    loss = loss_sum / max(tokens, 1)
    model.train()
    return {"valid_loss": loss, "valid_ppl": math.exp(min(loss, 50)), "valid_bleu": scores["bleu"],
            "valid_chrf": scores["chrf"], "bleu_signature": scores["bleu_signature"]}, translations


def train_func_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker loop: epochs of DDP steps, validation and a checkpoint after each."""
    import ray.train
    from ray.train.torch import get_device, prepare_model

    rank, world = ray_train.world()
    device = get_device()
    t = config["train"]
    torch.set_num_threads(max(1, int(t["cpus_per_worker"])))
    data_dir = Path(config["data_dir"])
    manifest = load_manifest(data_dir, "parallel")
    src_vocab, tgt_vocab = (Vocab.load(data_dir / manifest["vocab"][s]["file"]) for s in ("src", "tgt"))
    train = read_pairs(data_dir, manifest["splits"]["train"]["files"])
    valid = _valid_pairs(config, manifest) if rank == 0 else None
    torch.manual_seed(config["seed"])
    model = build_model(config, src_vocab, tgt_vocab, len(train), quiet=rank != 0).to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=t["lr"])
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=t["lr_decay"],
                                                           patience=t["lr_patience"], min_lr=t["min_lr"])
    # train_seconds: in training steps; loop_seconds: wall clock of the epochs, validation included
    progress = {"epoch": 0, "best_bleu": -1.0, "best_epoch": -1, "bad_epochs": 0, "train_seconds": 0.0,
                "loop_seconds": 0.0, "train_tokens": 0.0}
    best_state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            state = torch.load(Path(directory) / STATE_FILE, map_location=device, weights_only=True)
            if rank == 0 and (Path(directory) / BEST_FILE).exists():
                best_state = torch.load(Path(directory) / BEST_FILE, map_location="cpu", weights_only=True)
        fingerprints = {side: manifest["vocab"][side]["fingerprint"] for side in ("src", "tgt")}
        if state.get("vocab") != fingerprints:
            raise ManifestError(f"the checkpoint of run {config['run_name']!r} was trained on other vocabularies than "
                                f"{data_dir}'s; use another run_name or resume=false")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        progress = state["progress"]
    ddp_model = prepare_model(model, move_to_device=False)
    bundle = Bundle.from_manifest(model, manifest, src_vocab, tgt_vocab)
    log_metrics = MetricsLog.for_rank(config, rank)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and t["amp"] else nullcontext()
    budget = t["max_minutes"] * 60 or float("inf")
    src_len, tgt_len = train.lengths()
    out_of_time = False
    for epoch in range(progress["epoch"], t["epochs"]):
        batches = worker_batches(token_batches(src_len, tgt_len, t["batch_tokens"], config["seed"], epoch), rank, world)
        model.train()
        window = {"loss": 0.0, "tokens": 0, "seconds": 0.0}
        epoch_start = last_report = time.perf_counter()
        for step, index in enumerate(batches):
            started = time.perf_counter()
            src, lengths, tgt_in, tgt_out = _batch(train, index, device)
            with autocast:
                logits, _ = ddp_model(src, lengths, tgt_in)
            loss, tokens = sequence_loss(logits, tgt_out, t["label_smoothing"])
            optimizer.zero_grad(set_to_none=True)
            (loss / max(tokens, 1)).backward()
            if t["clip_norm"]:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t["clip_norm"])
            optimizer.step()
            seconds = time.perf_counter() - started
            window = {"loss": window["loss"] + float(loss.detach()), "tokens": window["tokens"] + tokens,
                      "seconds": window["seconds"] + seconds}
            progress["train_seconds"] += seconds
            progress["train_tokens"] += tokens * world
            if step % 10 == 9 or step + 1 == len(batches):  # every worker checks the same steps
                flags = broadcast([progress["loop_seconds"] + time.perf_counter() - epoch_start >= budget,
                                    time.perf_counter() - last_report >= t["report_seconds"]], device)
                out_of_time = flags[0] > 0
                if flags[1] > 0 and log_metrics is not None:
                    log_metrics({"train_loss": window["loss"] / max(window["tokens"], 1),
                                          "tokens_per_sec": window["tokens"] * world / window["seconds"],
                                          "lr": optimizer.param_groups[0]["lr"],
                                          "epoch_progress": epoch + (step + 1) / len(batches)},
                         int(progress["train_tokens"]))
                if flags[1] > 0:
                    window, last_report = {"loss": 0.0, "tokens": 0, "seconds": 0.0}, time.perf_counter()
                if out_of_time:
                    break
        metrics: dict[str, Any] = {}
        if rank == 0:
            metrics, _ = validate(model, bundle, valid, config, device)
        progress["loop_seconds"] += time.perf_counter() - epoch_start
        bleu = broadcast([metrics.get("valid_bleu", 0.0)], device)[0]
        scheduler.step(bleu)
        improved = bleu > progress["best_bleu"]
        progress.update(epoch=epoch + 1, bad_epochs=0 if improved else progress["bad_epochs"] + 1)
        if improved:
            progress.update(best_bleu=bleu, best_epoch=epoch)
            if rank == 0:
                best_state = {"model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                              "metrics": dict(metrics, epoch=epoch)}
        stop = out_of_time or (t["patience"] and progress["bad_epochs"] >= t["patience"])
        metrics.update(epoch=epoch, best_bleu=progress["best_bleu"],
                       best_epoch=progress["best_epoch"], train_seconds=progress["train_seconds"],
                       loop_seconds=progress["loop_seconds"],
                       train_tokens=progress["train_tokens"],
                       train_tokens_per_sec=progress["train_tokens"] / max(progress["train_seconds"], 1e-9),
                       stopped_early=bool(stop and epoch + 1 < t["epochs"]))
        if rank == 0:
            worker_log(f"epoch {epoch}: valid loss {metrics['valid_loss']:.3f} ppl {metrics['valid_ppl']:.2f} "
                  f"BLEU {metrics['valid_bleu']:.2f} chrF {metrics['valid_chrf']:.2f}, "
                  f"{metrics['train_tokens_per_sec']:,.0f} target tokens/s")
        _report(metrics, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(), "progress": progress,
                          "vocab": {side: manifest["vocab"][side]["fingerprint"] for side in ("src", "tgt")}},
                best_state, rank)
        if stop:
            break


def _valid_pairs(config: dict[str, Any], manifest: dict[str, Any]) -> Pairs:
    valid = read_pairs(Path(config["data_dir"]), manifest["splits"]["valid"]["files"], text=True)
    limit = config["valid"]["max_sentences"]
    if limit and len(valid) > limit:
        valid = Pairs(valid.src[:limit], valid.tgt[:limit], valid.src_text[:limit], valid.tgt_text[:limit])
    if not len(valid):
        raise ManifestError(f"{config['data_dir']} has an empty valid split: validation needs one")
    return valid


def _report(metrics: dict[str, Any], state: dict[str, Any], best_state: dict[str, Any] | None, rank: int) -> None:
    """Report the epoch to Ray Train; rank 0 attaches the checkpoint (training state + best model)."""
    import ray.train

    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as directory:
        torch.save(state, Path(directory) / STATE_FILE)
        if best_state is not None:
            torch.save(best_state, Path(directory) / BEST_FILE)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


def _resolve(config: dict[str, Any]) -> dict[str, Any]:
    """Absolute paths (workers may run elsewhere) and a check of the input."""
    resolve_paths(config)
    for side in ("src", "tgt"):
        if config["embeddings"][side]:
            config["embeddings"][side] = str(Path(config["embeddings"][side]).resolve())
    manifest = load_manifest(Path(config["data_dir"]), "parallel")
    if not manifest["splits"]["train"]["files"]:
        raise ManifestError(f"{config['data_dir']} has no train shards")
    TranslatorSettings.from_dict({**config["model"], "src_vocab": 6, "tgt_vocab": 6})  # fail early on bad settings
    return config


def _plots(bundle: Bundle, translations: list[Any], sources: list[str], count: int, directory: Path) -> list[Path]:
    """Attention heatmaps of the first ``count`` translations (source tokens x output tokens)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = {t: i for i, t in enumerate(bundle.src_tokens)}
    paths = []
    for i, translation in enumerate(translations[:count]):
        ids = [index.get(t, UNK_ID) for t in translation.source_tokens]
        if not ids or bundle.model.decoder.attention is None:
            continue
        src = torch.tensor([ids])
        tgt_in, _ = frame_target(torch.tensor([translation.hypothesis.tokens], dtype=torch.long))
        with torch.no_grad():
            _, weights = bundle.model(src, torch.tensor([len(ids)]), tgt_in)
        w = weights[0].numpy()  # output words and <eos> x source positions as fed
        if bundle.model.settings.reverse_source:
            w = w[:, ::-1]
        fig, ax = plt.subplots(figsize=(1 + 0.4 * len(ids), 1 + 0.4 * w.shape[0]))
        ax.imshow(w, cmap="Greys", aspect="auto")
        ax.set_xticks(range(len(ids)), translation.source_tokens, rotation=90)
        ax.set_yticks(range(w.shape[0]), [bundle.tgt_tokens[t] for t in translation.hypothesis.tokens] + ["<eos>"])
        ax.set_title(sources[i][:60], fontsize=8)
        fig.tight_layout()
        paths.append(directory / f"attention-{i}.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the job; returns the summary it prints last."""
    cfg = load_config("train_translator", argv)
    print(to_yaml(cfg), flush=True)
    config = _resolve(to_dict(cfg))
    output_dir = Path(config["output_dir"])
    if output_dir.exists() and not config["overwrite"]:
        raise OutputExistsError(f"{output_dir} exists; pass overwrite=true to replace it")
    data_dir = Path(config["data_dir"])
    manifest = load_manifest(data_dir, "parallel")
    src_vocab, tgt_vocab = (Vocab.load(data_dir / manifest["vocab"][s]["file"]) for s in ("src", "tgt"))
    started = time.perf_counter()
    with mlflow_run(config["mlflow"], config["run_name"], params=to_dict(cfg)) as mlflow:
        mlflow.log_text(to_yaml(cfg), "config.yaml")
        ray_train.start(config, mlflow)
        result = ray_train.fit(train_func_per_worker, config, log_reports=True)
        with result.checkpoint.as_directory() as directory:
            last = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)
            best = torch.load(Path(directory) / BEST_FILE, map_location="cpu", weights_only=True)
        model = build_model({**config, "embeddings": {"src": None, "tgt": None, "freeze": False, "rescale": False}}, src_vocab, tgt_vocab,
                            manifest["splits"]["train"]["examples"])
        bundle = Bundle.from_manifest(model, manifest, src_vocab, tgt_vocab)
        bundle.info = {"best_epoch": best["metrics"]["epoch"], "valid_bleu": best["metrics"]["valid_bleu"],
                       "bleu_signature": best["metrics"]["bleu_signature"], "mlflow_run_id": config["mlflow_run_id"],
                       "decode": config["decode"]}
        model.load_state_dict(best["model"])
        model.eval()
        valid = _valid_pairs(config, manifest)
        v = config["valid"]
        with atomic_directory(output_dir, overwrite=config["overwrite"]) as tmp:
            for name, state in (("best", best["model"]), ("last", last["model"])):
                (tmp / name).mkdir()
                bundle.save(tmp / name / BUNDLE_FILE, state)
            (tmp / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
            shown = valid.src_text[:max(v["samples"], v["heatmaps"])]
            translations = translate(bundle, shown, unk=config["decode"]["unk"])
            plots = _plots(bundle, translations, valid.src_text, v["heatmaps"], tmp)
        test = _test_scores(bundle, config, manifest)
        progress = last["progress"]
        summary = {"best": str(output_dir / "best"), "last": str(output_dir / "last"),
                   "best_epoch": best["metrics"]["epoch"], "epochs": progress["epoch"],
                   "valid_bleu": best["metrics"]["valid_bleu"], "valid_chrf": best["metrics"]["valid_chrf"],
                   "bleu_signature": best["metrics"]["bleu_signature"],
                   "train_seconds": round(progress["train_seconds"], 1),
                   "train_tokens_per_sec": progress["train_tokens"] / max(progress["train_seconds"], 1e-9),
                   "wall_seconds": round(time.perf_counter() - started, 1), **test}
        per_epoch = {"epochs", "best_epoch", "valid_bleu", "valid_chrf"}  # already logged per epoch
        mlflow.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float)) and k not in per_epoch})
        mlflow.log_table({"source": valid.src_text[:v["samples"]], "reference": valid.tgt_text[:v["samples"]],
                          "translation": [t.text for t in translations[:v["samples"]]]}, "samples.json")
        for plot in plots:
            mlflow.log_artifact(str(output_dir / plot.name), "attention")
        mlflow.log_artifacts(str(output_dir / "best"), "best")
        if config["mlflow"]["enabled"]:
            import mlflow.pytorch

            # pickle: pt2 traces forward, which the length-dependent packing and loops do not allow
            mlflow.pytorch.log_model(model, name="model", serialization_format="pickle",
                                     code_paths=[str(PROJECT_DIR / "rnn_models")])
        mlflow.set_tag("output_dir", str(output_dir))
    print(json.dumps(summary))
    return summary


def _test_scores(bundle: Bundle, config: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    """Greedy and beam BLEU/chrF on the test split (none when it is empty or not asked for)."""
    split = config["valid"]["test_split"]
    if not split or not manifest["splits"].get(split, {}).get("files"):
        return {}
    pairs = read_pairs(Path(config["data_dir"]), manifest["splits"][split]["files"], text=True)
    d = config["decode"]
    out: dict[str, Any] = {}
    for name, beam in (("greedy", 1), (f"beam{d['beam']}", d["beam"])):
        scores, _ = translate_and_score(bundle, pairs.src_text, pairs.tgt_text, d, beam)
        out.update({f"test_bleu_{name}": scores["bleu"], f"test_chrf_{name}": scores["chrf"]})
        out["test_bleu_signature"], out["test_chrf_signature"] = scores["bleu_signature"], scores["chrf_signature"]
    return out


def main() -> None:
    try:
        run()
    except (ConfigError, ManifestError, OutputExistsError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
