"""``manifest.json``: what a preprocessing output holds, how it was made and what was dropped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.contract.atomic import write_atomically
from pipelines.contract.errors import ManifestError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


def write_manifest(directory: Path, manifest: dict[str, Any]) -> Path:
    """Write the manifest (last, so its presence marks a complete output)."""
    counts = manifest["counts"]
    if counts["read"] != counts["kept"] + sum(counts["dropped"].values()):
        raise ValueError(f"counts do not add up: {counts}")
    path = directory / MANIFEST_NAME
    write_atomically(path, json.dumps(manifest, indent=2, ensure_ascii=False, sort_keys=False) + "\n")
    return path


def load_manifest(data_dir: Path, kind: str | None = None) -> dict[str, Any]:
    """Read and check the manifest of a preprocessing output; ``kind`` is ``parallel`` or ``monolingual``."""
    path = Path(data_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(
            f"{data_dir} has no {MANIFEST_NAME}: not a (complete) preprocessing output; "
            "run `python -m jobs.preprocess` first"
        )
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ManifestError(f"{path}: format_version {manifest.get('format_version')!r}, expected {FORMAT_VERSION}")
    if kind is not None and manifest.get("kind") != kind:
        raise ManifestError(f"{path}: holds {manifest.get('kind')} data, {kind} data expected")
    return manifest
