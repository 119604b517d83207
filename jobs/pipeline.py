"""Run every stage as one MLflow parent run: preprocess -> word2vec (-> language model) -> translator -> evaluate.

    python -m jobs.pipeline [CONFIG.yaml] [key=value ...]

Stages, each a job run in this process as a child run of the pipeline's MLflow run:
``corpus`` (jobs.preprocess on the parallel corpus), ``text`` (jobs.preprocess on monolingual text),
``word2vec`` (jobs.train_word2vec on ``text``), ``lm`` (jobs.train_lm on ``text``; off unless
``stages.lm.enabled``), ``translator`` (jobs.train_translator on ``corpus``, its embeddings initialised
from ``word2vec``) and ``evaluate`` (jobs.evaluate on the test split).
A stage whose output exists from an earlier run with the same inputs and resolved config (its
fingerprint, kept in ``work_dir/stages/<stage>.json``) is reused, not recomputed. Writes
``work_dir/report.md`` and ``report.json``; prints how to open the MLflow UI, and last one line of
JSON with the run id, tracking URI, BLEU and the output paths.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs import evaluate, preprocess, train_lm, train_translator, train_word2vec
from jobs.common import cli
from jobs.common.config import load_config, to_dict, to_dotlist, to_yaml
from jobs.common.job_output import show_config
from jobs.common.spark_session import spark_session
from jobs.common.tracking import is_server, mlflow_run, project_store, runs_page, tracking_uri
from pipelines.contract.atomic import write_atomically
from pipelines.spark.readers import resolve_inputs

# Keys that say where and how a stage runs, not what it computes: left out of its fingerprint.
_PLACEMENT = (
    "output_dir",
    "overwrite",
    "run_name",
    "storage_path",
    "resume",
    "mlflow",
    "spark",
    "ray",
    "log_level",
    "progress",
)


@dataclass
class Stage:
    """One step of the pipeline: the job it runs and the arguments it is given."""

    name: str
    job: str
    run: Callable[[Sequence[str]], dict[str, Any]]
    argv: list[str]
    upstream: tuple[str, ...]
    output: Path


def plan(config: dict[str, Any]) -> list[Stage]:
    """The stages to run, in order, with their arguments wired together."""
    work = Path(config["work_dir"]).resolve()
    shared = {section: config[section] for section in ("spark", "ray", "mlflow", "log_level", "progress")}
    # each trainer registers under its own name: the pipeline's registry_name is the translator's
    shared["mlflow"] = {k: v for k, v in shared["mlflow"].items() if k not in ("parent_run_id", "registry_name")}
    s = config["stages"]

    def stage(name: str, job: str, run: Callable[..., Any], upstream: tuple[str, ...], **wiring: Any) -> Stage:
        preset = [s[name]["preset"]] if s[name].get("preset") else []
        wiring = {"run_name": f"{config['run_name']}-{name}", **wiring}
        argv = preset + to_dotlist(s[name]["overrides"]) + to_dotlist(shared) + to_dotlist(wiring)
        return Stage(name, job, run, argv, upstream, Path(wiring.get("output_dir") or wiring.get("checkpoint")))

    with_word2vec, with_lm = s["word2vec"]["enabled"], s["lm"]["enabled"]
    vocab = (
        {}
        if config["vocab_kind"] == "word"
        else {"vocab.kind": config["vocab_kind"], "vocab.max_size": config["piece_vocab_size"]}
    )
    stages = [
        stage("corpus", "preprocess", preprocess.run, (), output_dir=str(work / "corpus"), overwrite=True, **vocab)
    ]
    embeddings: dict[str, Any] = {}
    if with_word2vec or with_lm:
        # subwords: the text is segmented by the corpus's piece model of its language, so that every
        # word2vec piece vector is one the translator knows
        text_vocab = {"vocab.from": str(work / "corpus")} if vocab else {}
        stages.append(
            stage(
                "text",
                "preprocess",
                preprocess.run,
                ("corpus",) if vocab else (),
                output_dir=str(work / "text"),
                overwrite=True,
                **text_vocab,
            )
        )
    if with_word2vec:
        stages.append(
            stage(
                "word2vec",
                "train_word2vec",
                train_word2vec.run,
                ("text",),
                data_dir=str(work / "text"),
                output_dir=str(work / "word2vec"),
                overwrite=True,
                **{"model.dim": config["embedding_size"]},
            )
        )
        embeddings = {f"embeddings.{s['word2vec']['init']}": str(work / "word2vec")}
    if with_lm:
        stages.append(
            stage(
                "lm",
                "train_lm",
                train_lm.run,
                ("text",),
                data_dir=str(work / "text"),
                output_dir=str(work / "lm"),
                overwrite=True,
            )
        )
    stages.append(
        stage(
            "translator",
            "train_translator",
            train_translator.run,
            ("corpus", "word2vec") if with_word2vec else ("corpus",),
            data_dir=str(work / "corpus"),
            output_dir=str(work / "translator"),
            overwrite=True,
            **{
                "model.embedding_size": config["embedding_size"],
                "mlflow.registry_name": config["mlflow"]["registry_name"],
            },
            **embeddings,
        )
    )
    stages.append(
        stage(
            "evaluate",
            "evaluate",
            evaluate.run,
            ("translator",),
            checkpoint=str(work / "translator/best"),
            sets=[{"name": "test", "data_dir": str(work / "corpus"), "split": "test"}],
        )
    )
    return stages


def fingerprint(stage: Stage, upstream: dict[str, str]) -> str:
    """A digest of what the stage computes from: its resolved config (placement keys aside), the
    fingerprints of the stages it reads, and for preprocessing the bytes of its input files."""
    config = to_dict(load_config(stage.job, stage.argv))
    what = {
        "job": stage.job,
        "config": {k: v for k, v in config.items() if k not in _PLACEMENT},
        "upstream": {name: upstream[name] for name in stage.upstream},
    }
    if stage.job == "preprocess":
        specs = resolve_inputs(config["data"]["inputs"], config["data"]["kind"])
        what["inputs"] = [{k: f[k] for k in ("path", "sha256")} for spec in specs for f in spec.describe()]
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def _checkpoints(work: Path, stage: Stage, fingerprint: str) -> list[str]:
    """A trainer's checkpoints go to a directory named for its fingerprint: an interrupted stage
    resumes when rerun unchanged, a changed one starts over (older directories are removed)."""
    if stage.job not in ("train_word2vec", "train_lm", "train_translator"):
        return []
    storage = work / "checkpoints" / f"{stage.name}-{fingerprint[:12]}"
    for old in storage.parent.glob(f"{stage.name}-*"):
        if old != storage:
            shutil.rmtree(old, ignore_errors=True)
    return [f"storage_path={storage}"]


def _child_run_id(mlflow: Any, config: dict[str, Any], stage: Stage) -> str | None:
    """The id of the run the stage just logged under the pipeline's run."""
    if not config["mlflow"]["enabled"]:
        return None
    parent = mlflow.active_run().info
    runs = mlflow.search_runs(
        [parent.experiment_id],
        output_format="list",
        max_results=1,
        filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}' and "
        f"tags.mlflow.runName = '{config['run_name']}-{stage.name}'",
        order_by=["attributes.start_time DESC"],
    )
    return runs[0].info.run_id if runs else None


def _summary(stage: Stage, result: dict[str, Any]) -> dict[str, Any]:
    return preprocess.summary(result, stage.output) if stage.job == "preprocess" else result


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the pipeline; returns the summary it prints last."""
    cfg = load_config("pipeline", argv)
    show_config(cfg, "pipeline")
    config = to_dict(cfg)
    work = Path(config["work_dir"]).resolve()
    stages = plan(config)
    records: dict[str, dict[str, Any]] = {}
    with mlflow_run(config["mlflow"], config["run_name"], params=config) as mlflow, ExitStack() as stack:
        mlflow.log_text(to_yaml(cfg), "config.yaml")
        prints: dict[str, str] = {}
        spark = None
        for number, stage in enumerate(stages, 1):
            step = f"[{number}/{len(stages)}] {stage.name}"
            prints[stage.name] = fingerprint(stage, prints)
            record_file = work / "stages" / f"{stage.name}.json"
            record = json.loads(record_file.read_text()) if record_file.is_file() else {}
            if (
                config["reuse"]
                and record.get("fingerprint") == prints[stage.name]
                and (stage.job == "evaluate" or stage.output.exists())
            ):
                print(
                    f"== {step}: reusing {stage.output} (same inputs and config as MLflow run "
                    f"{record.get('mlflow_run_id')})",
                    flush=True,
                )
                record["reused"] = True
            else:
                record_file.unlink(missing_ok=True)
                argv = stage.argv + _checkpoints(work, stage, prints[stage.name])
                print(f"== {step} (jobs.{stage.job})", flush=True)  # its config follows, compactly
                started = time.perf_counter()
                if stage.job == "preprocess" and spark is None:  # one session for the preprocessing stages
                    spark = stack.enter_context(
                        spark_session(config["spark"], app_name="rnnmt-pipeline", progress=config["progress"])
                    )
                elif stage.job != "preprocess" and spark is not None:
                    stack.close()  # stop it before training needs the memory
                    spark = None
                result = stage.run(argv)
                record = {
                    "fingerprint": prints[stage.name],
                    "output": str(stage.output),
                    "mlflow_run_id": _child_run_id(mlflow, config, stage),
                    "summary": _summary(stage, result),
                }
                write_atomically(record_file, json.dumps(record, indent=2, default=str) + "\n")
                record["reused"] = False
                print(f"== {step} done in {time.perf_counter() - started:.0f} s", flush=True)
            records[stage.name] = record
            mlflow.set_tags(
                {
                    f"stage.{stage.name}.run_id": record["mlflow_run_id"] or "",
                    f"stage.{stage.name}.reused": str(record["reused"]).lower(),
                    f"stage.{stage.name}.output": str(stage.output),
                }
            )
        run_id = mlflow.active_run().info.run_id if config["mlflow"]["enabled"] else None
        next_steps = _next_steps(mlflow, config, run_id, records)
        report = _report(records, config, next_steps)
        write_atomically(work / "report.json", json.dumps(report, indent=2, default=str) + "\n")
        write_atomically(work / "report.md", _markdown(report))
        mlflow.log_artifact(str(work / "report.md"))
        mlflow.log_artifact(str(work / "report.json"))
        metrics = {k: v for k, v in report["scores"].items() if isinstance(v, (int, float))}
        mlflow.log_metrics(metrics)
    summary = {
        "mlflow_run_id": run_id,
        "tracking_uri": tracking_uri(config["mlflow"]) if run_id else None,
        "bleu": report["scores"].get("test_greedy_bleu"),
        "bleu_signature": report["bleu_signature"],
        "outputs": report["outputs"],
        "reused": [n for n, r in records.items() if r["reused"]],
        "report": str(work / "report.md"),
    }
    print(f"\nReport: {work / 'report.md'}")
    for step in next_steps:
        print(step)
    print(json.dumps(summary))
    return summary


def _next_steps(mlflow: Any, config: dict[str, Any], run_id: str | None, records: dict[str, Any]) -> list[str]:
    """How to browse the runs and serve the champion (none without MLflow)."""
    if not run_id:
        return []
    experiment = mlflow.get_run(run_id).info.experiment_id
    uri = tracking_uri(config["mlflow"])
    if is_server(uri):
        steps = [f"Browse the runs: {runs_page(uri, experiment)}"]
    else:
        steps = [
            f"Browse the runs: make ui   (or: mlflow ui --backend-store-uri {uri} --host 127.0.0.1 "
            f"--port 5000), then open {runs_page('http://127.0.0.1:5000', experiment)}"
        ]
    registry = records.get("translator", {}).get("summary", {}).get("registry")
    if registry:
        steps.append(serve_hint(registry["name"], config["mlflow"]))
    return steps


def serve_hint(name: str, mlflow: dict[str, Any]) -> str:
    """How to serve the registered champion and translate with it by curl."""
    store = "" if tracking_uri(mlflow) == project_store() else f" mlflow.tracking_uri={tracking_uri(mlflow)}"
    return (
        f"Serve the champion: make serve   (or: python -m jobs.serve model=models:/{name}@champion port=5001"
        f"{store}), then:\n"
        "  curl -s http://127.0.0.1:5001/invocations -H 'Content-Type: application/json' "
        '-d \'{"inputs": ["I like cats."]}\''
    )


def _report(records: dict[str, dict[str, Any]], config: dict[str, Any], next_steps: list[str]) -> dict[str, Any]:
    """What the pipeline produced: the headline scores, sample translations, the registry's decision,
    word2vec's scores and neighbours, every score with its signature, where the outputs are, which
    runs, and what to do next."""
    evaluation = records["evaluate"]["summary"]
    scores: dict[str, Any] = {}
    signature = None
    for key, value in evaluation.items():
        if isinstance(value, dict) and "bleu" in value:
            scores[f"{key}_bleu"], scores[f"{key}_chrf"] = value["bleu"], value["chrf"]
            signature = value["bleu_signature"]
    translator = records["translator"]["summary"]
    scores.update({"valid_bleu": translator["valid_bleu"], "best_epoch": translator["best_epoch"]})
    word2vec = None
    if "word2vec" in records:
        w2v = records["word2vec"]["summary"]
        for group in ("analogy", "similarity"):
            for name, value in (w2v.get(group) or {}).items():
                if isinstance(value, (int, float)):
                    scores[f"word2vec_{group}_{name}"] = value
        evaluation_file = Path(records["word2vec"]["output"]) / "eval.json"
        if evaluation_file.is_file():
            word2vec = json.loads(evaluation_file.read_text(encoding="utf-8"))
    if "lm" in records:
        scores["lm_valid_perplexity"] = records["lm"]["summary"]["valid_perplexity"]
    corpus = records["corpus"]["summary"]
    return {
        "scores": scores,
        "bleu_signature": signature,
        "test_sets": {k: v for k, v in evaluation.items() if isinstance(v, dict) and "bleu" in v},
        "samples": translator.get("samples", []),
        "registry": translator.get("registry"),
        "word2vec": word2vec,
        "corpus": {k: corpus[k] for k in ("read", "kept", "splits")},
        "outputs": {name: r["output"] for name, r in records.items() if name != "evaluate"},
        "runs": {name: {"mlflow_run_id": r["mlflow_run_id"], "reused": r["reused"]} for name, r in records.items()},
        "tracking_uri": tracking_uri(config["mlflow"]) if config["mlflow"]["enabled"] else None,
        "next_steps": next_steps,
    }


def _markdown(report: dict[str, Any], samples: int = 5, neighbours: int = 6) -> str:
    """The report for a reader: what came out first, then the details."""
    lines = ["# rnnmt pipeline report", ""]
    sets = report["test_sets"]
    greedy = next((v for k, v in sets.items() if k.endswith("_greedy")), None)
    beam = next(((k, v) for k, v in sets.items() if not k.endswith("_greedy")), None)
    if beam and greedy:
        lines.append(
            f"**Translator: test BLEU {beam[1]['bleu']:.1f} with {beam[0].rsplit('_', 1)[1].replace('beam', 'beam ')}, "
            f"{greedy['bleu']:.1f} greedy** (chrF {beam[1]['chrf']:.1f} and {greedy['chrf']:.1f}), on the test "
            f"split; validation BLEU {report['scores']['valid_bleu']:.1f} (greedy) at epoch "
            f"{report['scores']['best_epoch']}."
        )
    registry = report["registry"]
    if registry:
        verdict = (
            "is the new champion"
            if registry["champion"]
            else f"is not the champion (version {registry['champion_version']} stays)"
        )
        lines += ["", f"Registry: `{registry['name']}` version {registry['version']} {verdict}: {registry['reason']}."]
    if report["samples"]:
        lines += ["", "## Sample translations", "", "Validation sentences, decoded greedily by the best model:", ""]
        lines += ["| source | reference | translation |", "| --- | --- | --- |"]
        for sample in report["samples"][:samples]:
            cells = (sample[k].replace("|", "\\|") for k in ("source", "reference", "translation"))
            lines.append("| " + " | ".join(cells) + " |")
    word2vec = report["word2vec"]
    if word2vec:
        lines += ["", "## word2vec", ""]
        similarity, analogy = word2vec.get("similarity") or {}, word2vec.get("analogy") or {}
        if "spearman" in similarity:
            lines.append(
                f"WordSim-353 Spearman {similarity['spearman']:.3f} ({similarity['covered']} of "
                f"{similarity['pairs']} pairs covered); analogy accuracy {100 * analogy.get('accuracy', 0):.1f}%."
            )
        if word2vec.get("neighbours"):
            lines += ["", "Nearest neighbours (cosine):", ""]
            for word, near in word2vec["neighbours"].items():
                lines.append(f"- **{word}**: " + ", ".join(w for w, _ in near[:neighbours]))
    lines += ["", "## Scores", "", "| score | value |", "| --- | ---: |"]
    lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in report["scores"].items()]
    splits = ", ".join(f"{name} {count:,}" for name, count in report["corpus"]["splits"].items())
    lines += [
        "",
        f"BLEU signature: `{report['bleu_signature']}`",
        "",
        f"Corpus: {report['corpus']['read']:,} pairs read, {report['corpus']['kept']:,} kept ({splits}).",
        "",
        "## Stages",
        "",
        "| stage | output | MLflow run | reused |",
        "| --- | --- | --- | --- |",
    ]
    for name, run in report["runs"].items():
        reused = "yes" if run["reused"] else "no"
        lines.append(f"| {name} | {report['outputs'].get(name, '')} | {run['mlflow_run_id'] or ''} | {reused} |")
    if report["next_steps"]:
        lines += ["", "## Next", ""] + [f"- {step}" for step in report["next_steps"]]
    lines += ["", f"Tracking URI: {report['tracking_uri']}", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
