"""Progress bars (tqdm) for the long steps a user waits on: on stderr, and only on a terminal.

Every job takes ``progress`` (config key, or ``--progress/--no-progress``): true (the default) shows
bars when stderr is a terminal, false never does; CI logs and redirected output stay clean.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm


def shown(progress: bool | None = True) -> bool:
    """Whether bars are drawn: wanted, and stderr is a terminal."""
    return progress is not False and sys.stderr.isatty()


def bar(progress: bool | None = True, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr (rate and ETA when ``total`` is known), disabled unless ``shown``."""
    return tqdm(file=sys.stderr, dynamic_ncols=True, disable=not shown(progress), **kwargs)
