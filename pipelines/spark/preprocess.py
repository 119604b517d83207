"""The preprocessing pipeline: raw corpora -> vocabularies, sharded Parquet and a manifest.

Layout of the output directory (see docs/data-format.md):
``vocab/<side>.tsv``, ``train|valid|test/part-NNNNN.parquet`` and ``manifest.json``.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from pipelines.contract.atomic import atomic_directory
from pipelines.contract.errors import ConfigError, check_integer, check_number
from pipelines.contract.manifest import FORMAT_VERSION, write_manifest
from pipelines.contract.pieces import PIECE_KINDS, VOCAB_KINDS, PieceModel, train_piece_model
from pipelines.contract.specials import SPECIALS, UNK_ID
from pipelines.contract.vocab import GivenVocab, Vocab, select_vocab
from pipelines.spark import filters, readers
from pipelines.spark.count import count_tokens, top_tokens
from pipelines.spark.encode import table_encoder
from pipelines.spark.normalize import spark_normalize, spark_token_count
from pipelines.spark.output import write_shards
from pipelines.spark.readers import SPLITS, read_inputs, resolve_inputs
from pipelines.spark.split import assign_split, example_hash, shard_of
from pipelines.text.normalize import NormalizeOptions

KINDS = ("parallel", "monolingual", "labelled")
ORDERS = ("hash", "input")  # rows within a split: by the example hash, or as the input has them


@dataclass(frozen=True)
class Side:
    """One side of the data: its vocabulary name, its columns and how its text is normalized."""

    name: str
    ids_column: str
    text_column: str
    lang: str
    options: NormalizeOptions

    @property
    def raw(self) -> str:
        return "tgt_raw" if self.name == "tgt" else "src_raw"

    @property
    def norm(self) -> str:
        """The normalized text: tokens joined by single spaces."""
        return f"{self.name}_norm"

    @property
    def length_column(self) -> str:
        return f"{self.ids_column}_len"


def sides_for(cfg: Mapping[str, Any]) -> list[Side]:
    """The sides of a corpus: ``words`` for monolingual and labelled data, ``src`` and ``tgt`` for pairs."""
    data, norm = cfg["data"], cfg["normalize"]
    if data["kind"] not in KINDS:
        raise ConfigError(f"data.kind must be one of {KINDS}, got {data['kind']!r}")

    def options(lang: str) -> NormalizeOptions:
        return NormalizeOptions.for_language(
            lang,
            norm["unicode"],
            bool(norm["lowercase"]),
            norm["apostrophe"],
            norm.get("tokenize", "words"),
            norm.get("unk_token"),
        )

    if data["kind"] != "parallel":
        return [Side("words", "ids", "text", data["src_lang"], options(data["src_lang"]))]
    return [
        Side("src", "src", "src_text", data["src_lang"], options(data["src_lang"])),
        Side("tgt", "tgt", "tgt_text", data["tgt_lang"], options(data["tgt_lang"])),
    ]


def _spread(df: DataFrame, partitions: int) -> DataFrame:
    """Repartition to ``partitions``, or (0) up to the default parallelism when inputs are few files."""
    if partitions > 0:
        return df.repartition(partitions)
    parallelism = df.sparkSession.sparkContext.defaultParallelism
    return df.repartition(parallelism) if df.rdd.getNumPartitions() < parallelism else df


def _normalize(records: DataFrame, sides: Sequence[Side], flt: Mapping[str, Any]) -> DataFrame:
    """Add the normalized text and token count of each side and complete every record's drop reason."""
    raw = [s.raw for s in sides]
    reason = F.coalesce(F.col("reason"), F.when(filters.too_long_line(raw, flt["max_chars"]), filters.LINE_TOO_LONG))
    records = records.withColumn("reason", reason)
    for side in sides:
        records = spark_normalize(records, side.raw, side.norm, side.options, where=F.col("reason").isNull())
        records = records.withColumn(side.length_column, spark_token_count(F.col(side.norm), side.options))
    lengths = filters.length_reason([s.length_column for s in sides], flt["min_len"], flt["max_len"], flt["max_ratio"])
    return records.withColumn("reason", F.coalesce(F.col("reason"), lengths))


def label_names(cfg: Mapping[str, Any], records: DataFrame) -> list[str]:
    """The labels of labelled data, in id order: ``data.labels`` as given, else every label the
    usable records carry (after their input's ``label_map``), sorted (as numbers when all are integers)."""
    if cfg["data"].get("labels"):
        return [str(label) for label in cfg["data"]["labels"]]
    seen = [
        r["label_raw"]
        for r in records.where(F.col("reason").isNull() & (F.col("label_raw") != ""))
        .select("label_raw")
        .distinct()
        .collect()
    ]
    numeric = all(label.lstrip("-").isdigit() for label in seen)
    return sorted(seen, key=lambda label: (int(label), label) if numeric else (0, label))


def _label(records: DataFrame, names: Sequence[str]) -> DataFrame:
    """Add each record's label id (``label``, its index in ``names``); a missing or unknown label
    becomes the record's drop reason."""
    label = F.col("label_raw")
    reason = F.coalesce(
        F.col("reason"),
        F.when(label.isNull() | (label == ""), F.lit(filters.MISSING_LABEL)).when(
            ~label.isin(*names), F.lit(filters.UNKNOWN_LABEL)
        ),
    )
    ids = (F.array_position(F.array(*(F.lit(n) for n in names)), label) - 1).cast("int")
    return records.withColumn("reason", reason).withColumn("label", F.when(reason.isNull(), ids))


def _label_counts(directory: Path, files: Mapping[str, list[str]], classes: int) -> dict[str, list[int]]:
    """Examples per label id in each split, read back from the shards."""
    counts = {}
    for split in SPLITS:
        total = np.zeros(classes, np.int64)
        for name in files[split]:
            total += np.bincount(
                pq.read_table(directory / name, columns=["label"])["label"].to_numpy(), minlength=classes
            )
        counts[split] = [int(c) for c in total]
    return counts


def _write_labels(path: Path, names: Sequence[str], counts: Sequence[int]) -> None:
    """``vocab/labels.tsv``: ``id<TAB>label<TAB>count`` (count in the train split), with that header."""
    lines = ["id\tlabel\tcount"] + [f"{i}\t{name}\t{count}" for i, (name, count) in enumerate(zip(names, counts))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _groups(sides: Sequence[Side], cfg: Mapping[str, Any]) -> dict[str, list[Side]]:
    """The sides each vocabulary serves: one per side, or one ``shared`` by all."""
    return {"shared": list(sides)} if cfg["shared"] else {s.name: [s] for s in sides}


def _build_vocabs(train: DataFrame, sides: Sequence[Side], cfg: Mapping[str, Any]) -> dict[str, Vocab]:
    """One word (or character) vocabulary per side, or one shared by all; counted in one Spark job,
    ranked on the driver."""
    groups = _groups(sides, cfg)
    counts = count_tokens(
        train, {name: [s.norm for s in group] for name, group in groups.items()}, chars=cfg["kind"] == "char"
    ).toArrow()
    vocabs = {}
    for name, group in groups.items():
        ranked, total = top_tokens(counts.filter(pc.equal(counts["vocab"], name)), cfg["max_size"], cfg["min_count"])
        vocab = select_vocab(ranked, cfg["max_size"], cfg["min_count"], total)
        vocabs.update({s.name: vocab for s in group})
    return vocabs


def _train_piece_models(
    train: DataFrame, sides: Sequence[Side], cfg: Mapping[str, Any], log: Callable[[str], None]
) -> tuple[dict[str, PieceModel], dict[str, Any]]:
    """One SentencePiece model per side, or one shared by all, trained on the driver on the
    ``vocab.sample_sentences`` training examples of smallest hash (the same sample, in the same
    order, whatever the partitioning). Returns the models and the training settings."""
    norm_cols = [s.norm for s in sides]
    sample = train.select("hash", *norm_cols).orderBy("hash", *norm_cols).limit(int(cfg["sample_sentences"])).toArrow()
    log(f"training {cfg['kind']} piece models on {sample.num_rows} training examples")
    models = {}
    for group in _groups(sides, cfg).values():
        # Each example's sides one after the other (a shared model learns both languages).
        texts = [text for row in zip(*(sample[s.norm].to_pylist() for s in group)) for text in row]
        model = PieceModel(
            train_piece_model(texts, cfg["kind"], int(cfg["max_size"]), float(cfg["character_coverage"]))
        )
        models.update({s.name: model for s in group})
    import sentencepiece

    settings = {
        "kind": cfg["kind"],
        "size": int(cfg["max_size"]),
        "character_coverage": float(cfg["character_coverage"]),
        "sample_sentences": int(cfg["sample_sentences"]),
        "sampled_examples": sample.num_rows,
        "sentencepiece": sentencepiece.__version__,
    }
    return models, settings


def _word_totals(examples: DataFrame, sides: Sequence[Side]) -> dict[str, dict[str, int]]:
    """Words (normalized tokens) per split and side, before encoding (for pieces per word)."""
    rows = examples.groupBy("split").agg(*(F.sum(s.length_column).alias(s.name) for s in sides)).collect()
    return {
        split: {s.name: next((int(r[s.name]) for r in rows if r["split"] == split), 0) for s in sides}
        for split in SPLITS
    }


def _split_stats(
    directory: Path, files: Mapping[str, list[str]], sides: Sequence[Side], sizes: Mapping[str, int]
) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """Examples, tokens and [UNK] tokens per split and side, and each side's id counts in the train
    split, read back from the written shards (with Arrow on the driver: the output directory is
    local or shared storage)."""
    stats, train_counts = {}, {s.name: np.zeros(sizes[s.name], np.int64) for s in sides}
    columns = [c for s in sides for c in (s.ids_column, s.length_column)]
    for split in SPLITS:
        entry: dict[str, Any] = {
            "examples": 0,
            "files": files[split],
            "tokens": {s.name: 0 for s in sides},
            "unk": {s.name: 0 for s in sides},
        }
        for name in files[split]:
            table = pq.read_table(directory / name, columns=columns)
            entry["examples"] += table.num_rows
            for s in sides:
                ids = pc.list_flatten(table[s.ids_column])
                if len(ids) != pc.sum(table[s.length_column]).as_py():
                    raise RuntimeError(f"{name}: {s.length_column} does not match the length of {s.ids_column}")
                entry["tokens"][s.name] += len(ids)
                entry["unk"][s.name] += pc.sum(pc.equal(ids, UNK_ID)).as_py() or 0
                if split == "train":
                    train_counts[s.name] += np.bincount(ids.to_numpy(), minlength=sizes[s.name])
        entry["coverage"] = {s.name: _coverage(entry["tokens"][s.name], entry["unk"][s.name]) for s in sides}
        stats[split] = entry
    return stats, train_counts


def _coverage(tokens: int, unk: int) -> float | None:
    return round(1 - unk / tokens, 6) if tokens else None


def _ratio(pieces: int, words: int) -> float | None:
    return round(pieces / words, 4) if words else None


def _versions(spark: SparkSession) -> dict[str, str]:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "unknown"

    return {
        "rnnmt": version("rnnmt"),
        "python": platform.python_version(),
        "spark": spark.version,
        "pyarrow": pyarrow.__version__,
        "java": spark.sparkContext._jvm.System.getProperty("java.version"),
    }


def check_settings(cfg: Mapping[str, Any]) -> None:
    """Refuse settings out of range or that do not go together before any work starts (ConfigError
    naming the key)."""
    if cfg["vocab"]["kind"] not in VOCAB_KINDS:
        raise ConfigError(f"vocab.kind must be one of {', '.join(VOCAB_KINDS)}; got {cfg['vocab']['kind']!r}")
    coverage = cfg["vocab"]["character_coverage"]
    if isinstance(coverage, bool) or not isinstance(coverage, (int, float)) or not 0.9 <= coverage <= 1:
        raise ConfigError(f"vocab.character_coverage must be a number in [0.9, 1], got {coverage!r}")
    sides = sides_for(cfg)
    kind, norm = cfg["vocab"]["kind"], sides[0].options
    if norm.tokenize == "none" and kind != "char":
        raise ConfigError("normalize.tokenize=none keeps the text unsplit: it needs vocab.kind=char")
    if norm.unk_token and kind in PIECE_KINDS:
        raise ConfigError(f"normalize.unk_token works with word and char vocabularies, not {kind}")
    if cfg["output"]["order"] not in ORDERS:
        raise ConfigError(f"output.order must be one of {', '.join(ORDERS)}; got {cfg['output']['order']!r}")
    if cfg["output"]["order"] == "input":
        if cfg["data"]["kind"] != "monolingual":
            raise ConfigError("output.order=input keeps a text stream in order: it is for monolingual data")
        if cfg["filter"]["dedup"]:
            raise ConfigError("output.order=input keeps the text as a stream: set filter.dedup=false")
    labels = cfg["data"].get("labels")
    if labels is not None:
        if cfg["data"]["kind"] != "labelled":
            raise ConfigError("data.labels is for data.kind=labelled")
        names = [str(label) for label in labels] if isinstance(labels, (list, tuple)) else []
        if len(names) < 2 or len(set(names)) != len(names) or any(not n or n != n.strip() for n in names):
            raise ConfigError(
                f"data.labels must list two or more distinct labels as the inputs write them "
                f"(or be null: every label in the data), got {labels!r}"
            )
    least_len = 0 if cfg["data"]["kind"] == "monolingual" else 1  # monolingual: empty lines may be kept
    lowest = {
        "output.shards": 1,
        "filter.min_len": least_len,
        "filter.max_len": 1,
        "filter.max_chars": 1,
        "vocab.max_size": len(SPECIALS),
        "vocab.min_count": 1,
        "vocab.sample_sentences": 1,
    }
    for key, low in lowest.items():
        section, name = key.split(".")
        check_integer(key, cfg[section][name], low, " (the special tokens)" if key == "vocab.max_size" else "")
    check_number("filter.max_ratio", cfg["filter"]["max_ratio"], 0, note=" (0 = no ratio filter)")
    valid, test = (
        check_number("split.valid", cfg["split"]["valid"], 0, 1),
        check_number("split.test", cfg["split"]["test"], 0, 1),
    )
    if valid + test >= 1:
        raise ConfigError(f"split.valid and split.test must leave room for train (valid={valid}, test={test})")


def given_for_sides(given: Mapping[str, GivenVocab], sides: Sequence[Side]) -> Mapping[str, GivenVocab]:
    """``given`` as this data's sides name them: one-sided data (monolingual, labelled) given a
    pair's vocabularies takes the side in its language (e.g. word2vec text with a translator's
    source pieces)."""
    if len(sides) != 1 or set(given) != {"src", "tgt"}:
        return given
    (side,) = sides
    matches = [g for g in given.values() if g.lang == side.lang]
    if len({(g.tokens, g.pieces) for g in matches}) != 1:  # none, or two different ones
        langs = {name: g.lang for name, g in given.items()}
        raise ConfigError(
            f"vocab.from={given['src'].source} has vocabularies for {langs}; this data needs one "
            f"in {side.lang!r}" + (" (both are, with different vocabularies: ambiguous)" if matches else "")
        )
    return {side.name: matches[0]}


def check_given(given: Mapping[str, GivenVocab], sides: Sequence[Side]) -> dict[str, Any]:
    """Refuse vocabularies (``vocab.from``) made for other sides, languages or normalization; returns
    the ``vocab`` settings they amount to (kind, shared)."""
    source = next(iter(given.values())).source
    if set(given) != {s.name for s in sides}:
        raise ConfigError(
            f"vocab.from={source} has vocabularies for {sorted(given)}; this data needs {sorted(s.name for s in sides)}"
        )
    keys = {
        "unicode_form": "normalize.unicode",
        "lowercase": "normalize.lowercase",
        "apostrophe": "normalize.apostrophe",
    }
    for side in sides:
        g, ours = given[side.name], vars(side.options)
        if g.lang != side.lang:
            raise ConfigError(f"vocab.from={source}: its {side.name} side is {g.lang!r}, this data's is {side.lang!r}")
        for key, value in g.normalize.items():
            if ours.get(key) != value:
                raise ConfigError(
                    f"vocab.from={source} was normalized with {keys.get(key, key)}={value!r} on the "
                    f"{side.name} side, this config gives {ours.get(key)!r}: set it to match"
                )
    kinds = {g.kind for g in given.values()}
    if len(kinds) > 1:
        raise ConfigError(f"vocab.from={source} mixes vocabulary kinds {sorted(kinds)}")
    shared = len({(g.tokens, g.pieces) for g in given.values()}) == 1 and len(sides) > 1
    return {"kind": kinds.pop(), "shared": shared, "from": source}


def preprocess(
    spark: SparkSession,
    cfg: Mapping[str, Any],
    output_dir: Path,
    log: Callable[[str], None] = print,
    given: Mapping[str, GivenVocab] | None = None,
) -> dict[str, Any]:
    """Run the pipeline described by the resolved config ``cfg`` and publish it at ``output_dir``;
    with ``given`` vocabularies (``vocab.from``) encode with them instead of building new ones.

    Returns the manifest. Nothing appears at ``output_dir`` unless the whole run succeeds; an
    input Spark cannot read to its end (a truncated ``.gz``) is named in an InputError.
    """
    check_settings(cfg)
    if given:  # the vocabulary settings become those of the given vocabularies
        given = given_for_sides(given, sides_for(cfg))
        cfg = {**cfg, "vocab": {**cfg["vocab"], **check_given(given, sides_for(cfg))}}
    specs = resolve_inputs(cfg["data"]["inputs"], cfg["data"]["kind"])
    try:
        return _preprocess(spark, cfg, specs, output_dir, log, given or {})
    except Exception as err:
        explained = readers.explain_read_failure(specs, err)
        if explained is None:
            raise
        raise explained from None


def _preprocess(
    spark: SparkSession,
    cfg: Mapping[str, Any],
    specs: Sequence[readers.InputSpec],
    output_dir: Path,
    log: Callable[[str], None],
    given: Mapping[str, GivenVocab],
) -> dict[str, Any]:
    started = time.perf_counter()
    kind, flt, out = cfg["data"]["kind"], cfg["filter"], cfg["output"]
    pieces_kind, chars = cfg["vocab"]["kind"] in PIECE_KINDS, cfg["vocab"]["kind"] == "char"
    ordered = out["order"] == "input"
    sides = sides_for(cfg)
    shards = int(out["shards"])
    norm_cols, raw_cols = [s.norm for s in sides], [s.raw for s in sides]
    length_cols = [s.length_column for s in sides]
    labelled = kind == "labelled"
    label_cols = ["label"] if labelled else []

    with atomic_directory(Path(output_dir), overwrite=bool(cfg["overwrite"])) as tmp:
        log(f"reading {sum(len(s.files) + len(s.tgt_files) for s in specs)} file(s)")
        inputs = [entry for spec in specs for entry in spec.describe()]
        records = _spread(read_inputs(spark, specs, ordered), int(cfg["spark"]["partitions"]))
        if labelled:
            labels = label_names(cfg, records)
            log(f"{len(labels)} labels: {labels[:20]}")
            records = _label(records, labels)
        records = _normalize(records, sides, flt)
        # Cache what later steps read: the raw text only where it is kept or breaks dedup ties.
        keep_raw = bool(out["keep_text"] or flt["dedup"])
        records = records.select(
            "reason",
            "note",
            "fixed_split",
            "position",
            *norm_cols,
            *length_cols,
            *label_cols,
            *(raw_cols if keep_raw else []),
        ).persist()
        cached = [records]
        try:
            by_reason = records.groupBy("reason", "note").count().collect()
            read = sum(r["count"] for r in by_reason)
            dropped = {r: 0 for r in _reasons(kind, specs, bool(flt["dedup"]))}
            notes: dict[str, int] = {}
            for r in by_reason:
                if r["reason"] is not None:
                    dropped[r["reason"]] = dropped.get(r["reason"], 0) + r["count"]
                if r["note"] is not None:
                    notes[r["note"]] = notes.get(r["note"], 0) + r["count"]
            kept_before_dedup = read - sum(dropped.values())
            log(f"read {read} records, {kept_before_dedup} usable; dropped {_nonzero(dropped)}")

            examples = records.where(F.col("reason").isNull()).drop("reason", "note")
            if flt["dedup"]:
                pinned = any(spec.split in filters.HELD_OUT for spec in specs)
                examples = filters.deduplicate(examples, norm_cols, length_cols + label_cols + raw_cols, pinned)
            hashed = F.col("hash")
            examples = examples.withColumn("hash", example_hash(norm_cols, int(cfg["seed"]))).withColumn(
                "split", assign_split(hashed, cfg["split"]["valid"], cfg["split"]["test"], F.col("fixed_split"))
            )
            # in order: each split's rows cut into contiguous shards; else spread by hash
            examples = examples.withColumn(
                "shard",
                F.ntile(shards).over(Window.partitionBy("split").orderBy("position")) - 1
                if ordered
                else shard_of(hashed, shards),
            )
            if flt["dedup"]:
                examples = examples.persist()
                cached.append(examples)

            train = examples.where(F.col("split") == "train")
            if given and pieces_kind:
                log(f"encoding with the {cfg['vocab']['kind']} piece models of {cfg['vocab']['from']}")
                models = {s.name: PieceModel(given[s.name].pieces) for s in sides}
                piece_settings = {"from": cfg["vocab"]["from"]}
                encodings: dict[str, Vocab | bytes] = {s.norm: models[s.name].proto for s in sides}
                sizes = {s.name: len(models[s.name]) for s in sides}
                words = _word_totals(examples, sides)
            elif given:
                log(f"encoding with the {cfg['vocab']['kind']} vocabularies of {cfg['vocab']['from']}")
                encodings = {s.norm: Vocab(given[s.name].tokens, (0,) * len(given[s.name].tokens)) for s in sides}
                sizes = {s.name: len(given[s.name].tokens) for s in sides}
            elif pieces_kind:
                models, piece_settings = _train_piece_models(train, sides, cfg["vocab"], log)
                encodings = {s.norm: models[s.name].proto for s in sides}
                sizes = {s.name: len(models[s.name]) for s in sides}
                words = _word_totals(examples, sides)
            else:
                vocabs = _build_vocabs(train, sides, cfg["vocab"])
                encodings = {s.norm: vocabs[s.name] for s in sides}
                sizes = {s.name: len(vocabs[s.name]) for s in sides}
            log("vocabulary sizes: " + ", ".join(f"{s.name} {sizes[s.name]}" for s in sides))

            columns = [
                "split",
                "shard",
                "hash",
                *(["position"] if ordered else []),
                *norm_cols,
                *length_cols,
                *label_cols,
            ]
            if out["keep_text"]:
                columns += [F.col(s.raw).alias(s.text_column) for s in sides]
            encoder = table_encoder(
                encodings, {s.norm: s.ids_column for s in sides}, {s.norm: s.length_column for s in sides}, chars=chars
            )
            sort_columns = (
                ["position"]
                if ordered
                else ["hash", *norm_cols, *label_cols] + ([s.text_column for s in sides] if out["keep_text"] else [])
            )
            log(f"encoding and writing {shards} shards per split")
            files = write_shards(examples.select(*columns), tmp, shards, sort_columns, encoder)
        finally:
            for frame in cached:
                frame.unpersist()

        log("reading the shards back for their statistics")
        splits, train_counts = _split_stats(tmp, files, sides, sizes)
        kept = sum(splits[s]["examples"] for s in SPLITS)
        if flt["dedup"]:
            dropped[filters.DUPLICATE] = kept_before_dedup - kept
        if pieces_kind or given:  # the entries with their counts in the train shards (summed over shared sides)
            vocabs = {}
            for group in _groups(sides, cfg["vocab"]).values():
                counts = tuple(int(c) for c in sum(train_counts[s.name] for s in group))
                tokens = models[group[0].name].tokens if pieces_kind else given[group[0].name].tokens
                vocabs.update({s.name: Vocab(tokens, counts) for s in group})
        (tmp / "vocab").mkdir()
        vocab_entries = {}
        for side in sides:
            path = f"vocab/{side.name}.tsv"
            entry: dict[str, Any] = {"kind": cfg["vocab"]["kind"], "file": path}
            if given:
                entry["from"] = cfg["vocab"]["from"]
            if pieces_kind:
                model = models[side.name]
                entry["model"] = f"vocab/{side.name}.model"
                (tmp / entry["model"]).write_bytes(model.proto)
                entry.update(
                    model_sha256=model.sha256,
                    settings=piece_settings,
                    pieces_per_word={
                        split: _ratio(splits[split]["tokens"][side.name], words[split][side.name]) for split in SPLITS
                    },
                )
            vocabs[side.name].save(tmp / path)
            entry.update(
                size=len(vocabs[side.name]),
                fingerprint=vocabs[side.name].fingerprint(),
                coverage=splits["train"]["coverage"][side.name],
            )
            vocab_entries[side.name] = entry
        label_entry = None
        if labelled:
            label_counts = _label_counts(tmp, files, len(labels))
            _write_labels(tmp / "vocab/labels.tsv", labels, label_counts["train"])
            label_entry = {
                "file": "vocab/labels.tsv",
                "names": labels,
                "from": "data.labels" if cfg["data"].get("labels") else "data",
                "counts": label_counts,
            }
        manifest = {
            "format_version": FORMAT_VERSION,
            "kind": kind,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "inputs": inputs,
            "counts": {"read": read, "kept": kept, "dropped": dropped, "notes": notes},
            "sides": {
                s.name: {
                    "lang": s.lang,
                    "ids_column": s.ids_column,
                    "length_column": s.length_column,
                    "text_column": s.text_column if out["keep_text"] else None,
                    "normalize": vars(s.options),
                }
                for s in sides
            },
            "vocab": vocab_entries,
            **({"labels": label_entry} if label_entry else {}),
            "vocab_kind": cfg["vocab"]["kind"],
            "order": out["order"],
            "shared_vocab": bool(cfg["vocab"]["shared"]),
            "splits": splits,
            "shards": shards,
            "config": dict(cfg),
            "versions": _versions(spark),
            "seconds": round(time.perf_counter() - started, 2),
        }
        write_manifest(tmp, manifest)
    log(
        f"wrote {kept} examples to {output_dir} "
        f"(train {splits['train']['examples']}, valid {splits['valid']['examples']}, test {splits['test']['examples']})"
    )
    return manifest


def _reasons(kind: str, specs: Sequence[readers.InputSpec], dedup: bool) -> list[str]:
    """Every drop reason that applies to this run, so the manifest lists zeros too."""
    reasons = [readers.INVALID_UTF8]
    if any(s.format in ("tsv", "labelled") for s in specs):
        reasons.append(readers.MISSING_COLUMN)
    if any(s.format == "trees" for s in specs):
        reasons.append(readers.BAD_TREE)
    if kind == "labelled":
        reasons += [filters.MISSING_LABEL, filters.UNKNOWN_LABEL]
    reasons += [filters.LINE_TOO_LONG, filters.EMPTY, filters.TOO_SHORT, filters.TOO_LONG]
    if kind == "parallel":
        reasons.append(filters.LENGTH_RATIO)
    return reasons + ([filters.DUPLICATE] if dedup else [])


def _nonzero(counts: Mapping[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}
