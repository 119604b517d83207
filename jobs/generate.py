"""Generate text with a trained language model: read a prompt, then sample and feed back each token.

    python -m jobs.generate CHECKPOINT [--prompt TEXT | --prompt-file FILE] [--words N | --chars N | --tokens N]
                            [--temperature T] [--top-k K] [--top-p P] [--seed S] [--num N] [--max-context N]

CHECKPOINT is an ``lm.pt``, a directory holding one (``output_dir/best``), or an MLflow URI
(``runs:/RUN_ID/best``). The prompt is normalized with the rules the model was trained with and read
as the start of a new line (no prompt: the model starts a line of its own). Each sample is the
prompt followed by what the model wrote (``<eos>`` shown as a line break), samples separated by a
blank line on stdout. The same ``--seed`` gives the same samples; ``--temperature 0`` is greedy.
Sampling settings default to the model's training config (``sampling``). A prompt longer than
``--max-context`` tokens keeps its end (reported on stderr); a prompt that is not UTF-8 is refused
with the line and byte where it breaks.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from jobs.common import cli
from jobs.common.job_output import data_stdout
from jobs.common.line_stream import read_lines
from jobs.common.lm_checkpoint import LMBundle
from pipelines.contract.errors import ConfigError, InputError
from rnn_models.sampling import SampleSettings

FLAGS = ("temperature", "top_k", "top_p")  # the SampleSettings the command line sets


def read_prompt(args: argparse.Namespace) -> str:
    """The prompt from ``--prompt`` (its bytes as the shell passed them) or ``--prompt-file``
    (``-``: stdin), strictly UTF-8."""
    if args.prompt is not None and args.prompt_file is not None:
        raise ConfigError("give --prompt or --prompt-file, not both")
    if args.prompt_file is not None:
        if str(args.prompt_file) == "-":
            data, name = sys.stdin.buffer.read(), "<stdin>"
        elif not args.prompt_file.is_file():
            raise InputError(f"--prompt-file {args.prompt_file}: no such file")
        else:
            data, name = args.prompt_file.read_bytes(), str(args.prompt_file)
        return "\n".join(read_lines(data, name))
    if args.prompt is None:
        return ""
    # the shell's bytes: undecodable ones arrive as surrogate escapes, which fsencode turns back
    return "\n".join(read_lines(os.fsencode(args.prompt), "--prompt"))


def run(argv: Sequence[str] | None = None) -> dict[str, object]:
    """Generate; returns the samples and what was read."""
    parser = argparse.ArgumentParser(prog="python -m jobs.generate", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="lm.pt, a directory with one, or runs:/RUN_ID/best")
    parser.add_argument("--prompt", help="text to continue (default: none)")
    parser.add_argument("--prompt-file", type=Path, help="read the prompt from this file (- = stdin)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--words", type=int, help="words to generate (word models)")
    length.add_argument("--chars", type=int, help="characters to generate (character models)")
    length.add_argument("--tokens", type=int, help="tokens to generate (any model; default 100)")
    parser.add_argument("--temperature", type=float, help="0 = greedy; default: the training config's")
    parser.add_argument("--top-k", type=int, help="draw among the k most likely tokens only (0 = all)")
    parser.add_argument("--top-p", type=float, help="draw among the tokens whose probability reaches p (1 = all)")
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same samples")
    parser.add_argument("--num", type=int, default=1, help="how many samples")
    parser.add_argument(
        "--max-context",
        type=int,
        default=2000,
        help="read at most this many prompt tokens (the end of a longer prompt; 0 = all)",
    )
    parser.add_argument("--use-gpu", action="store_true", help="generate on the GPU")
    args = parser.parse_args(argv)
    prompt = read_prompt(args)
    bundle = LMBundle.load(args.checkpoint, "cuda" if args.use_gpu else "cpu")
    if args.words is not None and bundle.kind != "word":
        raise ConfigError(f"--words counts words: this is a {bundle.kind} model (use --tokens or --chars)")
    if args.chars is not None and bundle.kind != "char":
        raise ConfigError(f"--chars counts characters: this is a {bundle.kind} model (use --tokens or --words)")
    steps = next((n for n in (args.words, args.chars, args.tokens) if n is not None), 100)
    if steps < 0 or args.num < 1 or args.max_context < 0:
        raise ConfigError("--words/--chars/--tokens and --max-context must be >= 0, --num >= 1")
    base = bundle.sample_settings().to_dict()
    settings = SampleSettings.from_dict(
        {**base, **{k: getattr(args, k) for k in FLAGS if getattr(args, k) is not None}}
    )
    generated = bundle.generate(
        prompt, steps, settings, args.num, args.seed, args.max_context, "cuda" if args.use_gpu else "cpu"
    )
    glue = "" if bundle.kind == "char" or not prompt else " "
    samples = [prompt + (glue if text and not text.startswith("\n") else "") + text for text in generated.texts]
    data_stdout().write("\n\n".join(samples) + "\n")
    if generated.truncated:
        print(
            f"the prompt has {generated.prompt_tokens} tokens: the model read its last "
            f"{generated.prompt_tokens - generated.truncated} (--max-context {args.max_context})",
            file=sys.stderr,
        )
    print(
        f"generated {args.num} sample(s) of {steps} tokens (temperature {settings.temperature}, top-k "
        f"{settings.top_k}, top-p {settings.top_p}, seed {args.seed})",
        file=sys.stderr,
    )
    return {"samples": samples, "truncated": generated.truncated, "prompt_tokens": generated.prompt_tokens}


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
