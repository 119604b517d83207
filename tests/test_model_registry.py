"""The translator as an MLflow model: logged as a pyfunc model that translates text (no pickle),
loaded in a fresh process, registered with a champion alias that moves only to a better version,
and fetched back by ``models:/`` URIs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from test_translate import _original

from conftest import free_port
from jobs.common.checkpoint import BUNDLE_FILE, Bundle
from jobs.common.model_registry import CHAMPION, PERPLEXITY, beam_bleu, log_model, pairs_digest, register
from jobs.common.translation import translate
from rnn_models.search import DecodeSettings

TEXTS = ["The cat sleeps on 3 mats.", "a cat", ""]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A tracking store with a translator bundle, and the active URI pointing at it."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    # artifacts in the test's directory (a new experiment's default is ./mlruns)
    mlflow.set_experiment(
        experiment_id=mlflow.create_experiment("registry-test", artifact_location=(root / "artifacts").as_uri())
    )
    _original().save(root / BUNDLE_FILE)
    yield root, uri
    mlflow.set_tracking_uri(None)


def _log(store) -> str:
    """Log the store's translator in the active run, or a new one."""
    root, _ = store
    with mlflow.start_run(nested=mlflow.active_run() is not None):
        return log_model(mlflow, root / BUNDLE_FILE, Bundle.load(root)).model_uri


def test_logged_model_translates_text_as_jobs_translate_does(store):
    root, uri = store
    model_uri = _log(store)
    bundle = Bundle.load(root)
    base = bundle.decode_settings()
    model = mlflow.pyfunc.load_model(model_uri)
    # no pickled module: the model is this project's code and translator.pt
    local = Path(mlflow.artifacts.download_artifacts(model_uri))
    assert (local / "artifacts" / BUNDLE_FILE).is_file() and not list(local.rglob("*.pkl"))
    # the signature: a list of strings, decode settings as parameters defaulting to the model's
    signature = model.metadata.signature
    assert signature.inputs.to_dict() == [{"type": "string", "required": True}]
    defaults = {p.name: p.default for p in signature.params.params}
    assert defaults == {
        "beam": base.beam,
        "alpha": base.alpha,
        "unk": base.unk,
        "nbest": 1,
        "max_tokens": base.max_tokens,
    }
    expected = [t.text for t in translate(bundle, TEXTS, base)]
    assert model.predict(TEXTS) == expected
    greedy = [t.text for t in translate(bundle, TEXTS, DecodeSettings.from_dict({"beam": 1}, base))]
    assert model.predict(TEXTS, params={"beam": 1}) == greedy
    nbest = model.predict(TEXTS[:2], params={"nbest": 2})
    assert [[c["text"] for c in n][0] for n in nbest] == expected[:2]
    assert all(len(n) == 2 and n[0]["score"] >= n[1]["score"] for n in nbest)
    for bad, match in ((["fine", 3], "Expected type str"), ([], "no sentences"), ("one string", "Expected list")):
        with pytest.raises(MlflowException, match=match):
            model.predict(bad)
    with pytest.raises(MlflowException, match="nbest=9 needs a beam"):
        model.predict(TEXTS, params={"nbest": 9})

    # the same in a fresh Python process, which knows only the URI
    code = (
        "import json, sys, mlflow; mlflow.set_tracking_uri(sys.argv[1]); "
        "print(json.dumps(mlflow.pyfunc.load_model(sys.argv[2]).predict(json.loads(sys.argv[3]))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, uri, model_uri, json.dumps(TEXTS)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    assert json.loads(out.strip().splitlines()[-1]) == expected


def test_champion_moves_only_to_a_better_version_on_the_same_test_set(store):
    _, uri = store
    name, digest = "toy-translator", pairs_digest(["a cat"], ["un chat"])
    assert pairs_digest(["a cat"], ["un chien"]) != digest
    scored: list[str] = []

    def score_champion(model_uri: str) -> float:
        scored.append(model_uri)
        return 30.0

    client = mlflow.MlflowClient()
    decisions = []
    for bleu, test_set in ((10.0, digest), (8.0, digest), (12.5, digest), (25.0, "another-test-set")):
        with mlflow.start_run():
            decisions.append(register(mlflow, _log(store), name, bleu, test_set, score_champion, beam_bleu(5)))
        champion = client.get_model_version_by_alias(name, CHAMPION)
        assert int(champion.version) == decisions[-1]["champion_version"]
    assert [d["version"] for d in decisions] == [1, 2, 3, 4]
    assert [d["champion"] for d in decisions] == [True, False, True, False]
    assert decisions[0]["reason"] == "no champion yet"
    assert "8.00 does not beat champion version 1's 10.00 (its tag)" in decisions[1]["reason"]
    # the champion was scored on another test set: it is scored on this one (30.0 here) before comparing
    assert scored == [f"models:/{name}/3"] and "scored now" in decisions[3]["reason"]
    assert client.get_model_version(name, "2").tags["test_beam5_bleu"] == "8.00"

    # the champion's translator loads by alias and by version, as jobs.translate and jobs.evaluate take it
    by_alias = Bundle.load(f"models:/{name}@{CHAMPION}", tracking_uri=uri)
    by_version = Bundle.load(f"models:/{name}/3", tracking_uri=uri)
    assert by_alias.src_tokens == by_version.src_tokens == _original().src_tokens


def test_a_lower_perplexity_wins_and_a_champion_that_cannot_be_scored_stays(store):
    name, client = "toy-lm", mlflow.MlflowClient()
    decisions = []
    for perplexity, test_set in ((50.0, "ptb"), (60.0, "ptb"), (40.0, "ptb"), (10.0, "other-vocabulary")):
        with mlflow.start_run():
            decisions.append(register(mlflow, _log(store), name, perplexity, test_set, lambda uri: None, PERPLEXITY))
    assert [d["champion"] for d in decisions] == [True, False, True, False]
    assert "test perplexity 60.00 does not beat champion version 1's 50.00 (its tag)" in decisions[1]["reason"]
    assert decisions[2]["previous_champion_perplexity"] == 50.0
    assert "champion version 3 cannot be scored on this test set" in decisions[3]["reason"]
    assert int(client.get_model_version_by_alias(name, CHAMPION).version) == 3
    assert client.get_model_version(name, "4").tags["test_perplexity"] == "10.00"


def post(url: str, body: bytes) -> tuple[int, dict]:
    """The status and JSON answer of a POST of the JSON ``body`` to ``url``."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _wait_for(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    """Poll ``url`` until it answers 200, failing if ``process`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert process.poll() is None, process.stdout.read().decode()
        assert time.monotonic() < deadline, f"{url} did not answer within {timeout} s"
        time.sleep(1)


@contextlib.contextmanager
def served(model_uri: str, tracking_uri: str) -> Iterator[str]:
    """``jobs.serve`` (a real ``mlflow models serve``) serving ``model_uri`` on a free port, once it
    answers; yields its invocations URL and stops it after."""
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobs.serve",
            f"model={model_uri}",
            f"port={port}",
            f"mlflow.tracking_uri={tracking_uri}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_for(f"http://127.0.0.1:{port}/ping", server)
        yield f"http://127.0.0.1:{port}/invocations"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


@pytest.mark.slow
def test_served_model_answers_rest_requests_and_refuses_bad_ones(store):
    root, uri = store
    name = "served-translator"
    with mlflow.start_run():
        register(mlflow, _log(store), name, 1.0, "toy", lambda model_uri: 0.0, beam_bleu(5))
    with served(f"models:/{name}@{CHAMPION}", uri) as url:
        expected = [t.text for t in translate(Bundle.load(root), TEXTS, Bundle.load(root).decode_settings())]
        status, answer = post(url, json.dumps({"inputs": TEXTS}).encode())
        assert status == 200 and answer == {"predictions": expected}
        status, answer = post(url, json.dumps({"inputs": TEXTS[:1], "params": {"nbest": 2}}).encode())
        assert status == 200 and answer["predictions"][0][0]["text"] == expected[0]
        for bad, message in (
            (json.dumps({"inputs": [1, 2]}).encode(), "Expected type str"),
            (json.dumps({"inputs": []}).encode(), "no sentences"),
            (json.dumps({"inputs": "one"}).encode(), "Expected list"),
            (b'{"inputs": ["\xff\xfe"]}', "UTF-8"),
            (json.dumps({"inputs": ["a"], "params": {"beam": 0}}).encode(), "beam"),
        ):
            status, answer = post(url, bad)
            assert 400 <= status < 500 and message.lower() in answer["message"].lower(), (bad, status, answer)
        # and it still answers
        assert post(url, json.dumps({"inputs": TEXTS[:2]}).encode()) == (200, {"predictions": expected[:2]})
