"""Writes the checkpoints in this folder, one per model family, and what each produced when written
(expected.json). Run once, at commit 42e1c17 (before the shared training loop), with
``python tests/data/legacy/make_legacy.py``; tests/test_legacy_checkpoints.py loads them with
today's code and checks it produces the same outputs. Not rerun: the files are the old format."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from jobs.common.checkpoint import BUNDLE_FILE, Bundle
from jobs.common.classifier_checkpoint import CLASSIFIER_FILE, ClassifierBundle
from jobs.common.forecaster_checkpoint import FORECASTER_FILE, ForecasterBundle
from jobs.common.lm_checkpoint import LM_FILE, LMBundle
from jobs.common.translation import translate
from pipelines.contract.specials import SPECIALS
from pipelines.series.scaling import Scaling
from pipelines.text.normalize import NormalizeOptions
from rnn_models.classifier import Classifier, ClassifierSettings
from rnn_models.forecaster import Forecaster, ForecasterSettings
from rnn_models.language_model import LanguageModel, LanguageModelSettings
from rnn_models.sampling import SampleSettings
from rnn_models.search import DecodeSettings
from rnn_models.translator import Translator, TranslatorSettings

HERE = Path(__file__).parent
WORDS = ["the", "cat", "sleeps", "on", "a", "mat", ".", "good", "bad", "film"]
TEXTS = ["the cat sleeps on a mat .", "a good film", "bad cat"]
SERIES = pd.DataFrame(
    {
        "date": [f"2020-{m:02d}-01" for m in range(1, 13)],
        "value": [3.0, 4.0, 6.0, 5.0, 7.0, 8.0, 7.5, 9.0, 10.0, 9.5, 11.0, 12.0],
    }
)


def main() -> None:
    tokens = list(SPECIALS) + WORDS
    options = NormalizeOptions.for_language("en")
    expected = {}

    torch.manual_seed(1)
    translator = Translator(
        TranslatorSettings(src_vocab=len(tokens), tgt_vocab=len(tokens), embedding_size=8, hidden_size=8)
    ).eval()
    bundle = Bundle(translator, tokens, tokens, options, "en", "en", True, {"decode": {"beam": 2, "max_tokens": 6}})
    bundle.save(HERE / BUNDLE_FILE)
    decode = DecodeSettings.from_dict({"beam": 2, "max_tokens": 6})
    expected["translator"] = [t.text for t in translate(bundle, TEXTS, decode)]

    torch.manual_seed(2)
    lm = LMBundle(
        LanguageModel(LanguageModelSettings(vocab=len(tokens), embedding_size=8, hidden_size=8)).eval(),
        tokens,
        "word",
        options,
        "en",
        info={"sampling": {"temperature": 0.8}},
    )
    lm.save(HERE / LM_FILE)
    expected["lm"] = lm.generate("the cat", 6, lm.sample_settings(), 2, seed=3).texts

    torch.manual_seed(3)
    labels = ["neg", "pos", "mid"]
    classifier = ClassifierBundle(
        Classifier(ClassifierSettings(vocab=len(tokens), classes=3, embedding_size=8, hidden_size=8)).eval(),
        tokens,
        "word",
        options,
        "en",
        labels,
    )
    classifier.save(HERE / CLASSIFIER_FILE)
    expected["classifier"] = [p.probabilities for p in classifier.classify(TEXTS)]

    torch.manual_seed(4)
    forecaster = ForecasterBundle(
        Forecaster(ForecasterSettings(features=1, hidden_size=4, layers=1)).eval(),
        Scaling(),
        5,
        3,
        "interpolate",
        "date",
        ["value"],
        None,
        {},
    )
    forecaster.save(HERE / FORECASTER_FILE)
    table, _ = forecaster.forecast_frame(SERIES, 3, "series.csv")
    expected["forecaster"] = table["value"].tolist()
    assert SampleSettings  # the LM's sampling settings come from its info

    (HERE / "expected.json").write_text(json.dumps(expected, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
