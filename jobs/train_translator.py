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

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jobs.common import cli, ray_train
from jobs.common.checkpoint import BUNDLE_FILE, Bundle, average_states
from jobs.common.collectives import worker_log
from jobs.common.driver import Trainer, train
from jobs.common.model_registry import TestMetric, beam_bleu, pairs_digest
from jobs.common.reports import attention_heatmaps
from jobs.common.torch_files import load_checked
from jobs.common.tracking import tracking_uri
from jobs.common.training_loop import STATE_FILE, Family, LoopSettings
from jobs.common.translation import Translation, translate, translate_and_score
from pipelines.contract.errors import CheckpointError, ConfigError, ManifestError, check_integer, check_number
from pipelines.contract.manifest import load_manifest
from pipelines.contract.parallel_shards import Pairs, read_pairs
from pipelines.contract.pieces import PieceModel
from pipelines.contract.specials import EOS_ID, SPECIALS, UNK_ID
from pipelines.contract.vocab import Vocab, load_vocab, vocab_identity
from rnn_models.batching import pad, token_batches, worker_batches
from rnn_models.search import DecodeSettings
from rnn_models.translator import Translator, TranslatorSettings, frame_target, sequence_loss
from rnn_models.word_vectors import init_embedding_from

# Config keys holding paths, made absolute on the driver (jobs.tune uses them too).
PATH_KEYS = ("data_dir", "output_dir", "embeddings.src", "embeddings.tgt")


def settings_of(config: dict[str, Any], src: int = len(SPECIALS), tgt: int = len(SPECIALS)) -> TranslatorSettings:
    """The model settings a config describes, for vocabularies of ``src`` and ``tgt`` entries."""
    return TranslatorSettings.from_dict({**config["model"], "src_vocab": src, "tgt_vocab": tgt})


def build_model(
    config: dict[str, Any], src: Vocab, tgt: Vocab, sentences: int, pretrained: bool = True, quiet: bool = False
) -> Translator:
    """The translator a config describes for ``sentences`` training pairs, with pretrained
    embeddings loaded where configured and ``pretrained`` (their coverage printed unless ``quiet``)."""
    model = Translator(settings_of(config, len(src), len(tgt)))
    model.init_output_bias(tgt.counts[:EOS_ID] + (sentences,) + tgt.counts[EOS_ID + 1 :])
    e = config["embeddings"]
    for side, vocab, embedding in (("src", src, model.encoder.embedding), ("tgt", tgt, model.decoder.embedding)):
        if pretrained and e[side]:
            coverage = init_embedding_from(embedding, vocab.tokens, e[side], e["freeze"], e["rescale"])
            if not quiet:
                worker_log(f"{side} {coverage}")
    return model


def load_vocabs(data_dir: Path, manifest: dict[str, Any]) -> dict[str, tuple[Vocab, PieceModel | None]]:
    """The source and target vocabularies of a preprocessing output, with their piece models."""
    return {side: load_vocab(data_dir, manifest["vocab"][side]) for side in ("src", "tgt")}


class SubwordSampler:
    """Subword regularization of the training pairs: each draw segments them anew by sampling
    (BPE-dropout or unigram sampling), the same for the same seed; examples holding ``[UNK]`` keep
    their ids. The texts are decoded from the pieces once, here."""

    def __init__(self, pairs: Pairs, src: PieceModel, tgt: PieceModel):
        self.pairs = pairs
        self.sides = []
        for ids, model in ((pairs.src, src), (pairs.tgt, tgt)):
            plain = [i for i, x in enumerate(ids) if not (x == UNK_ID).any()]
            self.sides.append((model, plain, [model.processor.decode(ids[i].tolist()) for i in plain]))

    def draw(self, alpha: float, seed: int) -> Pairs:
        """The pairs segmented by sampling with ``alpha`` and ``seed``."""
        drawn_sides = []
        for (model, plain, texts), ids, side_seed in zip(
            self.sides, (self.pairs.src, self.pairs.tgt), (seed, seed + 1)
        ):
            drawn = list(ids)
            for i, new in zip(plain, model.sample(texts, alpha, side_seed % 2**32)):
                drawn[i] = np.asarray(new, dtype=np.int64)
            drawn_sides.append(drawn)
        return Pairs(drawn_sides[0], drawn_sides[1], self.pairs.src_text, self.pairs.tgt_text)


def make_batch(pairs: Pairs, index: Sequence[int], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Padded source, lengths, and the framed target (``<go>`` + target, target + ``<eos>``)."""
    src, src_len = pad([pairs.src[i] for i in index], device)
    tgt, _ = pad([pairs.tgt[i] for i in index], device)
    return src, src_len, *frame_target(tgt)


def validate(
    model: Translator, bundle: Bundle, valid: Pairs, config: dict[str, Any], device: torch.device
) -> tuple[dict[str, Any], list[Translation]]:
    """Validation loss, perplexity, greedy BLEU and chrF; also returns the translations."""
    model.eval()
    loss_sum, tokens = 0.0, 0
    src_len, tgt_len = valid.lengths()
    with torch.no_grad():
        for index in token_batches(
            src_len, tgt_len, config["train"]["batch_tokens"], 0, 0, max_sentences=config["train"]["batch_sentences"]
        ):
            src, lengths, tgt_in, tgt_out = make_batch(valid, index, device)
            logits, _ = model(src, lengths, tgt_in)
            loss, n = sequence_loss(logits, tgt_out)
            loss_sum, tokens = loss_sum + float(loss), tokens + n
    scores, translations = translate_and_score(
        bundle, valid.src_text, valid.tgt_text, decode_settings(config), 1, device
    )
    loss = loss_sum / max(tokens, 1)
    model.train()
    return {
        "valid_loss": loss,
        "valid_ppl": math.exp(min(loss, 50)),
        "valid_bleu": scores["bleu"],
        "valid_chrf": scores["chrf"],
        "valid_unk": scores["unk"],
        "bleu_signature": scores["bleu_signature"],
    }, translations


def decode_settings(config: dict[str, Any]) -> DecodeSettings:
    """The config's ``decode`` keys on top of the defaults."""
    return DecodeSettings.from_dict(config["decode"])


class TranslatorFamily(Family):
    """The translator in the shared loop: this worker's share of every epoch's length-bucketed
    batches, the cross-entropy per target token, and the valid split's greedy BLEU (the best model
    has the highest)."""

    metric, higher_is_better, unit = "valid_bleu", True, "tokens"

    def __init__(self, config: dict[str, Any], rank: int, world: int, device: torch.device):
        self.config, self.rank, self.world, self.device = config, rank, world, device
        data_dir = Path(config["data_dir"])
        self.manifest = load_manifest(data_dir, "parallel")
        self.vocabs = load_vocabs(data_dir, self.manifest)
        self.fingerprint = {side: vocab_identity(self.manifest["vocab"][side]) for side in ("src", "tgt")}
        self.train = read_pairs(data_dir, self.manifest["splits"]["train"]["files"])
        self.epoch_data = self.train
        self.sampler: SubwordSampler | None = None  # train.subword_alpha: made at the first draw
        self.valid = valid_pairs(config, self.manifest) if rank == 0 else None
        self.bundle: Bundle | None = None  # made at the first validation, once the model exists

    def build_model(self) -> Translator:
        (src, _), (tgt, _) = self.vocabs["src"], self.vocabs["tgt"]
        model = build_model(self.config, src, tgt, len(self.train), quiet=self.rank != 0)
        if self.config.get("init_weights"):  # fine-tuning: a trained translator's weights (a checkpoint still wins)
            model.load_state_dict(load_checked(self.config["init_weights"]))
        return model

    def batches(self, epoch: int) -> list[np.ndarray]:
        t = self.config["train"]
        self.epoch_data = self.epoch_pairs(epoch)
        src_len, tgt_len = self.epoch_data.lengths()
        return worker_batches(
            token_batches(
                src_len, tgt_len, t["batch_tokens"], self.config["seed"], epoch, max_sentences=t["batch_sentences"]
            ),
            self.rank,
            self.world,
        )

    def epoch_pairs(self, epoch: int) -> Pairs:
        """The training pairs of an epoch: as preprocessed, or with ``train.subword_alpha`` their
        segmentation sampled anew (the same draw on every worker, for the seed and epoch)."""
        alpha = self.config["train"]["subword_alpha"]
        (_, src_pieces), (_, tgt_pieces) = self.vocabs["src"], self.vocabs["tgt"]
        if not alpha or src_pieces is None or tgt_pieces is None:
            return self.train
        if self.sampler is None:
            self.sampler = SubwordSampler(self.train, src_pieces, tgt_pieces)
        return self.sampler.draw(alpha, self.config["seed"] * 1_000_003 + 2 * epoch)

    def step(self, batch: np.ndarray, forward: Any) -> tuple[torch.Tensor, float, float]:
        src, lengths, tgt_in, tgt_out = make_batch(self.epoch_data, batch, self.device)
        logits, _ = forward(src, lengths, tgt_in)
        loss, tokens = sequence_loss(logits, tgt_out, self.config["train"]["label_smoothing"])
        return loss / max(tokens, 1), float(loss.detach()), tokens

    def validate(self, epoch: int) -> dict[str, Any]:
        # the model as a bundle that translates raw text, made once (not a cached_property: a
        # family class run as __main__ is pickled by value, and Python 3.11's holds a lock)
        if self.bundle is None:
            self.bundle = Bundle.from_manifest(self.model, self.manifest, self.vocabs)
        return validate(self.model, self.bundle, self.valid, self.config, self.device)[0]

    def describe(self, metrics: dict[str, Any]) -> str:
        return (
            f"valid loss {metrics['valid_loss']:.3f} ppl {metrics['valid_ppl']:.2f} "
            f"BLEU {metrics['valid_bleu']:.2f} chrF {metrics['valid_chrf']:.2f}"
        )


def valid_pairs(config: dict[str, Any], manifest: dict[str, Any]) -> Pairs:
    """The validation pairs with their raw text (at most ``valid.max_sentences``)."""
    valid = read_pairs(Path(config["data_dir"]), manifest["splits"]["valid"]["files"], text=True)
    limit = config["valid"]["max_sentences"]
    if limit and len(valid) > limit:
        valid = Pairs(valid.src[:limit], valid.tgt[:limit], valid.src_text[:limit], valid.tgt_text[:limit])
    if not len(valid):
        raise ManifestError(f"{config['data_dir']} has an empty valid split: validation needs one")
    return valid


def prepare(config: dict[str, Any]) -> None:
    """Check the config and its input before anything starts."""
    LoopSettings.from_config(config)
    settings_of(config)
    decode_settings(config)
    manifest = load_manifest(Path(config["data_dir"]), "parallel")
    if not manifest["splits"]["train"]["files"]:
        raise ManifestError(f"{config['data_dir']} has no train shards")
    vocabs = load_vocabs(Path(config["data_dir"]), manifest)  # those the shards were made with
    if config["init_from"]:
        config["init_weights"] = stage_init_weights(config, vocabs)
    t, v = config["train"], config["valid"]
    check_integer("train.average_last", t["average_last"], 0, " (0 or 1 = off)")
    check_number("train.subword_alpha", t["subword_alpha"], 0, 1, " (0 = off)")
    check_integer("train.batch_tokens", t["batch_tokens"], 1)
    check_integer("train.batch_sentences", t["batch_sentences"], 0, " (0 = no limit)")
    check_number("train.label_smoothing", t["label_smoothing"], 0, 0.99)
    for key in ("max_sentences", "samples", "heatmaps"):
        check_integer(f"valid.{key}", v[key], 0)


def stage_init_weights(config: dict[str, Any], vocabs: dict[str, tuple[Vocab, PieceModel | None]]) -> str:
    """Check that ``init_from`` (a trained translator) fits this config's model and this data's
    vocabularies, and write its weights where every worker can read them (next to the run's Ray
    checkpoints); returns that file. Only the weights carry over: optimizer, learning rate,
    early stopping and best score start afresh."""
    source = config["init_from"]
    if config["embeddings"]["src"] or config["embeddings"]["tgt"]:
        raise ConfigError("init_from starts from a trained model's weights: leave embeddings.src/tgt unset")
    parent = Bundle.load(source, tracking_uri=tracking_uri(config["mlflow"]))
    (src, src_pieces), (tgt, tgt_pieces) = vocabs["src"], vocabs["tgt"]
    for side, vocab, pieces, tokens, proto in (
        ("src", src, src_pieces, parent.src_tokens, parent.src_pieces),
        ("tgt", tgt, tgt_pieces, parent.tgt_tokens, parent.tgt_pieces),
    ):
        if list(vocab.tokens) != list(tokens) or (pieces.proto if pieces else None) != proto:
            raise CheckpointError(
                f"init_from={source}: the {side} vocabulary of {config['data_dir']} is not the "
                f"model's; preprocess the data with vocab.from={source}"
            )
    ours, theirs = settings_of(config, len(src), len(tgt)).to_dict(), parent.model.settings.to_dict()
    # every setting that shapes the parameters or their meaning must agree (dropout may change)
    differ = [
        f"model.{k}={ours[k]!r} here, {theirs.get(k)!r} there"
        for k in ours
        if k != "dropout" and ours[k] != theirs.get(k)
    ]
    if differ:
        raise CheckpointError(
            f"init_from={source} is another model: " + "; ".join(differ) + " (set model.* to its settings)"
        )
    path = Path(config["storage_path"]) / f".init-{config['run_name']}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(parent.model.state_dict(), path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)  # atomic: a reader sees no half-written file
    config["init_parent_run_id"] = parent.info.get("mlflow_run_id")
    return str(path)


def average_last(
    checkpoints: list[tuple[Any, dict[str, Any]]],
    bundle: Bundle,
    valid: Pairs,
    config: dict[str, Any],
    best_bleu: float,
) -> dict[str, Any]:
    """With ``train.average_last`` N > 1: the mean of the parameters of the last N epochs' checkpoints
    (of those Ray kept, as ``(checkpoint, metrics)``), validated as every epoch is. Returns the
    epochs, both validation BLEUs and whether the average validates better than the best epoch
    (then with its ``model`` state and validation ``metrics``); empty when off."""
    n = config["train"]["average_last"]
    if n < 2:
        return {}
    epochs = sorted(((m["epoch"], c) for c, m in checkpoints if "epoch" in m), key=lambda e: e[0])[-n:]
    if len(epochs) < 2:
        print(f"train.average_last={n}: only {len(epochs)} epoch checkpoint(s), nothing to average", flush=True)
        return {}
    states = []
    for _, checkpoint in epochs:
        states.append(ray_train.read_checkpoint(checkpoint, [STATE_FILE])[STATE_FILE]["model"])
    state = average_states(states)
    bundle.model.load_state_dict(state)
    metrics = validate(bundle.model, bundle, valid, config, torch.device("cpu"))[0]
    published = metrics["valid_bleu"] > best_bleu
    print(
        f"averaged epochs {[e for e, _ in epochs]}: valid BLEU {metrics['valid_bleu']:.2f} against the best "
        f"epoch's {best_bleu:.2f}: {'published as best' if published else 'the best epoch stays'}",
        flush=True,
    )
    return {
        "epochs": [e for e, _ in epochs],
        "valid_bleu_averaged": metrics["valid_bleu"],
        "valid_bleu_best_epoch": best_bleu,
        "published": published,
        "model": state,
        "metrics": metrics,
    }


def test_scores(
    bundle: Bundle, config: dict[str, Any], manifest: dict[str, Any], decode: DecodeSettings
) -> dict[str, Any]:
    """Greedy and beam BLEU/chrF on the test split (none when it is empty or not asked for), and
    the test set's digest."""
    split = config["valid"]["test_split"]
    if not split or not manifest["splits"].get(split, {}).get("files"):
        return {}
    pairs = read_pairs(Path(config["data_dir"]), manifest["splits"][split]["files"], text=True)
    out: dict[str, Any] = {"test_set": pairs_digest(pairs.src_text, pairs.tgt_text)}
    for name, beam in (("greedy", 1), (f"beam{decode.beam}", decode.beam)):
        scores, _ = translate_and_score(bundle, pairs.src_text, pairs.tgt_text, decode, beam)
        out.update(
            {
                f"test_{name}_bleu": scores["bleu"],
                f"test_{name}_chrf": scores["chrf"],
                f"test_{name}_unk": scores["unk"],
            }
        )
        out["test_bleu_signature"], out["test_chrf_signature"] = scores["bleu_signature"], scores["chrf_signature"]
    return out


class TranslatorTrainer(Trainer):
    """The translator's part of the job on the driver: a ``translator.pt`` bundle that translates
    raw text (with checkpoint averaging where asked), sample translations and attention heatmaps,
    greedy and beam test scores; champion by the highest beam test BLEU."""

    job, family, checkpoint_file = "train_translator", TranslatorFamily, BUNDLE_FILE
    path_keys = PATH_KEYS
    prepare = staticmethod(prepare)

    def __init__(self, cfg: Any, config: dict[str, Any], mlflow: Any):
        super().__init__(cfg, config, mlflow)
        if config["init_from"]:  # fine-tuning: the parent model
            mlflow.set_tags(
                {"parent_model": config["init_from"], "parent_model.run_id": config["init_parent_run_id"] or ""}
            )
        self.manifest = load_manifest(self.data_dir, "parallel")
        self.vocabs = load_vocabs(self.data_dir, self.manifest)
        self.decode = decode_settings(config)
        self.valid = valid_pairs(config, self.manifest)
        self.averaged: dict[str, Any] = {}
        self.translations: list[Translation] = []
        self.plots: list[Path] = []

    def checkpoints_kept(self) -> int:
        return self.config["train"]["average_last"]

    def bundle(self, best: dict[str, Any]) -> Bundle:
        (src, _), (tgt, _) = self.vocabs["src"], self.vocabs["tgt"]
        model = build_model(self.config, src, tgt, self.manifest["splits"]["train"]["examples"], pretrained=False)
        model.load_state_dict(best["model"])
        model.eval()
        bundle = Bundle.from_manifest(model, self.manifest, self.vocabs)
        bundle.info = {
            "best_epoch": best["metrics"]["epoch"],
            "valid_bleu": best["metrics"]["valid_bleu"],
            "bleu_signature": best["metrics"]["bleu_signature"],
            "mlflow_run_id": self.config["mlflow_run_id"],
            "decode": self.decode.to_dict(),
            "parent_model": self.config["init_from"],
        }
        return bundle

    def outputs(self, bundle: Bundle, result: Any, best: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
        """best/ and last/; with checkpoint averaging also best_epoch/ and averaged/, and the average
        as best/ when it validates better than the best epoch."""
        self.averaged = averaged = average_last(
            result.best_checkpoints or [], bundle, self.valid, self.config, best["metrics"]["valid_bleu"]
        )
        outputs = {"best": best["model"], "last": last["model"]}
        if averaged:  # both candidates are kept, whichever is published as best
            outputs.update(best_epoch=best["model"], averaged=averaged["model"])
        if averaged.get("published"):
            best["model"] = outputs["best"] = averaged["model"]
            best["metrics"].update(averaged["metrics"])
            bundle.info.update(valid_bleu=best["metrics"]["valid_bleu"], averaged_epochs=averaged["epochs"])
        averaged.pop("model", None)
        bundle.model.load_state_dict(best["model"])
        bundle.model.eval()
        return outputs

    def save(self, bundle: Bundle, directory: Path, name: str, state: dict[str, Any]) -> None:
        info = {k: w for k, w in bundle.info.items() if k != "averaged_epochs"}
        if name in ("best_epoch", "averaged"):
            info["valid_bleu"] = self.averaged[f"valid_bleu_{name}"]
        if name == "averaged" or name == "best" and "averaged_epochs" in bundle.info:
            info["averaged_epochs"] = self.averaged["epochs"]
        replace(bundle, info=info).save(directory / BUNDLE_FILE, state)

    def test(self, bundle: Bundle) -> dict[str, Any]:
        return test_scores(bundle, self.config, self.manifest, self.decode)

    def write_extras(self, directory: Path, bundle: Bundle, test: dict[str, Any]) -> None:
        """Sample translations (greedy) of the valid split and their attention heatmaps."""
        v = self.config["valid"]
        shown = self.valid.src_text[: max(v["samples"], v["heatmaps"])]
        self.translations = translate(bundle, shown, replace(self.decode, beam=1))
        self.plots = attention_heatmaps(bundle, self.translations, self.valid.src_text, v["heatmaps"], directory)

    def summary_extras(self, bundle: Bundle) -> dict[str, Any]:
        v = self.config["valid"]
        extras: dict[str, Any] = {
            "bleu_signature": bundle.info["bleu_signature"],
            "samples": [
                {"source": source, "reference": reference, "translation": translation.text}
                for source, reference, translation in zip(
                    self.valid.src_text[: v["samples"]], self.valid.tgt_text[: v["samples"]], self.translations
                )
            ],
        }
        if self.averaged:
            extras["averaging"] = {k: v for k, v in self.averaged.items() if k != "metrics"}
        return extras

    def log_extras(self, bundle: Bundle, test: dict[str, Any]) -> None:
        mlflow, v, averaged = self.mlflow, self.config["valid"], self.averaged
        if averaged:  # both validation scores, and which one was published
            mlflow.log_metrics({k: averaged[k] for k in ("valid_bleu_averaged", "valid_bleu_best_epoch")})
            mlflow.set_tags({"averaging.epochs": averaged["epochs"], "averaging.published": averaged["published"]})
        mlflow.log_table(
            {
                "source": self.valid.src_text[: v["samples"]],
                "reference": self.valid.tgt_text[: v["samples"]],
                "translation": [t.text for t in self.translations[: v["samples"]]],
            },
            "samples.json",
        )
        for plot in self.plots:
            mlflow.log_artifact(str(self.output_dir / plot.name), "attention")

    def test_metric(self, bundle: Bundle) -> TestMetric:
        return beam_bleu(self.decode.beam)

    def score_champion(self, uri: str, bundle: Bundle) -> float | None:
        """The champion's BLEU on this run's test split (when it was scored on another)."""
        split = self.manifest["splits"][self.config["valid"]["test_split"]]
        pairs = read_pairs(self.data_dir, split["files"], text=True)
        champion = Bundle.load(uri, tracking_uri=self.config["mlflow_tracking_uri"])
        return translate_and_score(champion, pairs.src_text, pairs.tgt_text, self.decode, self.decode.beam)[0]["bleu"]


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the job; returns the summary it prints last."""
    return train(TranslatorTrainer, argv)


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
