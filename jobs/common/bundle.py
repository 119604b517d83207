"""What every family's published checkpoint shares (``translator.pt``, ``lm.pt``, ``classifier.pt``,
``forecaster.pt``): the model's settings and weights, what the family needs to read its raw input
and write its output, and ``info`` (where and how it was trained), all as plain data and tensors,
so that it loads with ``torch.load(..., weights_only=True)``; found in a file, a directory or an
MLflow URI (:func:`load_state`). Each family's bundle declares its file, its name in messages and
the keys a state must hold, and supplies :meth:`ModelBundle.contents`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from jobs.common.torch_files import check_file
from pipelines.contract.errors import CheckpointError
from pipelines.contract.specials import SPECIALS
from pipelines.text.normalize import NormalizeOptions


class ModelBundle:
    """The shared part of a family's checkpoint bundle (a dataclass with ``model`` and ``info``)."""

    file_name: ClassVar[str]  # the checkpoint's file: in best/ and last/, and among a logged model's artifacts
    artifact: ClassVar[str]  # its name among a logged MLflow model's artifacts
    what: ClassVar[str]  # how messages name the family ("language model")
    required: ClassVar[frozenset[str]]  # what a saved state must hold
    registry_name: ClassVar[str]  # the registered model's default name (in messages' examples)
    pyfunc_code: ClassVar[str]  # the file in jobs/common that MLflow runs to load a logged model of the family
    model_type: ClassVar[type]  # the model (rnn_models), made from its settings dataclass:
    settings_type: ClassVar[type]  # settings_type.from_dict(saved settings)

    model: Any
    info: dict[str, Any]

    def contents(self) -> dict[str, Any]:
        """The family's own part of the state: what reads its raw input and writes its output."""
        raise NotImplementedError

    def serving(self) -> dict[str, Any]:
        """How a logged model of this bundle is called: MLflow's ``input_example`` (inputs and
        parameters with their defaults) or ``signature``."""
        raise NotImplementedError

    def state(self, model_state: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
        """Everything ``load`` needs, as plain data and tensors (loadable with weights_only=True);
        ``model_state`` instead of the model's own weights if given."""
        return {
            "settings": self.model.settings.to_dict(),
            "model": model_state if model_state is not None else self.model.state_dict(),
            **self.contents(),
            "info": self.info,
        }

    def save(self, path: Path, model_state: dict[str, torch.Tensor] | None = None) -> None:
        torch.save(self.state(model_state), path)

    @classmethod
    def build_model(cls, settings: dict[str, Any]) -> torch.nn.Module:
        """The family's untrained model of the saved ``settings``."""
        return cls.model_type(cls.settings_type.from_dict(settings))

    @classmethod
    def from_state(cls, model: Any, state: dict[str, Any]) -> Any:
        """The bundle of ``model`` (weights loaded) and the rest of a saved ``state``, checked."""
        raise NotImplementedError

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu", tracking_uri: str | None = None) -> Any:
        """From the family's checkpoint file, a directory holding one (a training output's ``best/``,
        or an MLflow model's directory), or an MLflow URI: ``runs:/RUN_ID/best``,
        ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, fetched from ``tracking_uri`` (default:
        the project's). Loaded with ``weights_only=True``; the model on ``device``, in eval mode."""
        state = load_state(
            path, cls.file_name, cls.what, set(cls.required), tracking_uri, f"models:/{cls.registry_name}@champion"
        )
        model = cls.build_model(state["settings"])
        model.load_state_dict(state["model"])
        return cls.from_state(model.to(device).eval(), state)


def text_contents(tokens: list[str], kind: str, options: Any, lang: str, pieces: bytes | None) -> dict[str, Any]:
    """The state of a vocabulary that reads raw text: its entries and ``kind`` (word, char, bpe,
    unigram), the normalization ``options``, the language and the SentencePiece model (subwords)."""
    return {"tokens": tokens, "kind": kind, "options": vars(options), "lang": lang, "pieces": pieces}


def text_fields(manifest: dict[str, Any], vocab: Any, pieces: Any) -> dict[str, Any]:
    """A text bundle's reading of the ``words`` side of the data of ``manifest``, whose vocabulary
    and piece model (None for words) are ``vocab`` and ``pieces``: the bundle's fields."""
    side = manifest["sides"]["words"]
    return {
        "tokens": list(vocab.tokens),
        "kind": manifest["vocab"]["words"]["kind"],
        "options": NormalizeOptions(**side["normalize"]),
        "lang": side["lang"],
        "pieces": pieces.proto if pieces else None,
    }


def text_fields_of(state: dict[str, Any]) -> dict[str, Any]:
    """A text bundle's fields from its saved state (what :func:`text_contents` wrote), and its info."""
    return {
        "tokens": list(state["tokens"]),
        "kind": state["kind"],
        "options": NormalizeOptions(**state["options"]),
        "lang": state["lang"],
        "pieces": state.get("pieces"),
        "info": dict(state.get("info", {})),
    }


def check_specials(tokens: list[str], what: str) -> None:
    """Refuse a vocabulary that does not start with the special tokens at their fixed ids."""
    if list(tokens[: len(SPECIALS)]) != list(SPECIALS):
        raise CheckpointError(f"a {what}'s vocabulary must start with the special tokens")


def load_state(
    path: str | Path,
    file_name: str,
    what: str,
    keys: set[str],
    tracking_uri: str | None = None,
    example_uri: str = "runs:/RUN_ID/best",
) -> dict[str, Any]:
    """The saved state of a ``file_name`` checkpoint (loaded with ``weights_only=True``) from that
    file, a directory holding one (a training output's ``best/``, or an MLflow model's directory),
    or an MLflow URI (``runs:/``, ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``) fetched from
    ``tracking_uri`` (default: the project's). CheckpointError, naming the ``what``, when it is not
    there or lacks one of ``keys``."""
    path = str(path)
    if path.startswith(("runs:/", "models:/", "mlflow-artifacts:")):
        import mlflow

        from jobs.common.tracking import tracking_uri as default_uri

        try:
            path = mlflow.artifacts.download_artifacts(path, tracking_uri=tracking_uri or default_uri({}))
        except Exception as err:  # MLflow's errors for unknown runs, models and paths differ by store
            raise CheckpointError(f"cannot fetch {path} from MLflow: {err}") from None
    file = Path(path)
    if file.is_dir():
        # an MLflow model keeps its checkpoint under artifacts/
        file = next((f for f in (file / file_name, file / "artifacts" / file_name) if f.is_file()), file / file_name)
    if not file.is_file():
        raise CheckpointError(
            f"no {what} checkpoint at {file} (give a {file_name}, a directory holding one, or "
            f"an MLflow URI such as runs:/RUN_ID/best or {example_uri})"
        )
    check_file(file)  # a truncated or corrupt file: an error naming it, never a partial load
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file, or one holding more than weights
        raise CheckpointError(f"{file} is not a {what} checkpoint: {err}") from None
    if not isinstance(state, dict) or not keys <= set(state):
        raise CheckpointError(f"{file} is not a {what} checkpoint (no {', '.join(sorted(keys))})")
    return state
