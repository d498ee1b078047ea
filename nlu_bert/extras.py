"""What the install has: the base package serves, the `train` extra trains (pip install "nlu-bert[train]").

Nothing here imports torch or transformers; it only asks whether they could be imported.
"""

from __future__ import annotations

import importlib.util
from typing import List, Sequence

from rasa.shared.exceptions import RasaException

# What `nlu-bert[train]` adds to the serving install (pyproject.toml)
TRAIN_PACKAGES = ("torch", "transformers", "onnx")
INSTALL_TRAIN = 'pip install "nlu-bert[train]"'


class MissingExtraError(RasaException):
    """A part of nlu-bert that needs the `train` extra ran in an install without it."""


def missing(packages: Sequence[str] = TRAIN_PACKAGES) -> List[str]:
    """The ``packages`` that cannot be imported here."""
    out = []
    for name in packages:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(name)
    return out


def require_train(component: str, what: str = "training") -> None:
    """Stop with one line naming the install command when the `train` extra is not installed."""
    gone = missing()
    if gone:
        raise MissingExtraError(
            f"{component}: {what} needs {', '.join(gone)}, which this install of nlu-bert does not have (it serves "
            f"only). Install them with `{INSTALL_TRAIN}`."
        )
