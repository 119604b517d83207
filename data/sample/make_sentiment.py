"""Writes ``sentiment-en.tsv.gz``: a generated English sentiment sample (``label<TAB>sentence``,
1 = positive, 0 = negative) for the classifier's README command and tests.

Generated, not collected, so it may be redistributed freely (CC0). The label depends on word
order as well as words: ``not`` flips an adjective, and after ``but`` the second clause decides.

    python data/sample/make_sentiment.py   # rewrites the file; the same bytes every time
"""

from __future__ import annotations

import gzip
import random
from pathlib import Path

SUBJECTS = [
    "the film",
    "the movie",
    "the plot",
    "the acting",
    "the script",
    "the cast",
    "the ending",
    "the music",
    "the dialogue",
    "the story",
    "the camera work",
    "the director's vision",
    "the first hour",
    "the lead",
    "this sequel",
    "the humour",
    "the pacing",
    "the villain",
    "the soundtrack",
    "the production design",
]
POSITIVE = [
    "great",
    "moving",
    "funny",
    "clever",
    "beautiful",
    "gripping",
    "charming",
    "brilliant",
    "warm",
    "fresh",
    "delightful",
    "smart",
    "touching",
    "stunning",
    "witty",
    "memorable",
    "wonderful",
    "sharp",
]
NEGATIVE = [
    "dull",
    "boring",
    "clumsy",
    "tedious",
    "flat",
    "messy",
    "predictable",
    "shallow",
    "bland",
    "awful",
    "lifeless",
    "silly",
    "forgettable",
    "weak",
    "tiresome",
    "lazy",
    "hollow",
    "sloppy",
]
VERBS = ["is", "was", "feels", "seemed", "turns out to be"]
INTENSIFIERS = ["", "", "", "very ", "really ", "quite ", "remarkably ", "utterly "]
OPENERS = ["", "", "", "honestly , ", "in the end , ", "for me , ", "overall , ", "i think "]
CLOSERS = [" .", " .", " !", " ...", " , if you ask me .", " from start to finish ."]


def clause(rng: random.Random) -> tuple[str, int]:
    """One '<subject> <verb> [not] <adjective>' clause and its polarity."""
    label = rng.randrange(2)
    adjective = rng.choice(POSITIVE if label else NEGATIVE)
    negated = rng.random() < 0.3
    text = (
        f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {'not ' if negated else ''}{rng.choice(INTENSIFIERS)}{adjective}"
    )
    return text, label ^ negated


def sentence(rng: random.Random) -> tuple[int, str]:
    first, label = clause(rng)
    if rng.random() < 0.35:  # a contrast: the clause after "but" decides
        second, second_label = clause(rng)
        while second_label == label:
            second, second_label = clause(rng)
        first, label = f"{first} , but {second}", second_label
    return label, f"{rng.choice(OPENERS)}{first}{rng.choice(CLOSERS)}"


def main(path: Path = Path(__file__).with_name("sentiment-en.tsv.gz"), lines: int = 4000, seed: int = 13) -> None:
    rng = random.Random(seed)
    rows = [sentence(rng) for _ in range(lines)]
    data = "".join(f"{label}\t{text}\n" for label, text in rows).encode()
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as out:
        out.write(data)


if __name__ == "__main__":
    main()
