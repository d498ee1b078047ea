"""Where a component's backbone comes from: a hub id, a local folder, or ``scratch``.

Shared by both classifiers. Nothing here imports torch or transformers at module
import time, so Rasa can import the components cheaply.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, TypeVar

from rasa.shared.exceptions import RasaException

if TYPE_CHECKING:  # pragma: no cover
    import torch

logger = logging.getLogger(__name__)

SCRATCH = "scratch"
DEVICES = ("auto", "cpu", "cuda", "mps")

T = TypeVar("T")


class ModelUnavailableError(RasaException):
    """A backbone named in config.yml could not be loaded (hub unreachable, bad id, bad folder)."""


def is_scratch(model: str) -> bool:
    return str(model).strip().lower() == SCRATCH


def is_local_folder(model: str) -> bool:
    return Path(os.path.expanduser(str(model))).is_dir()


def hub_is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def describe_source(model: str) -> str:
    """A one-line description of where ``model`` comes from, for logs."""
    if is_scratch(model):
        return "scratch (random weights, vocabulary built from the training data)"
    if is_local_folder(model):
        return f"local folder {Path(os.path.expanduser(model)).resolve()}"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    return f"hub id '{model}' via {endpoint}" + (" (HF_HUB_OFFLINE=1: local cache only)" if hub_is_offline() else "")


def unavailable_message(component: str, model: str, reason: str) -> str:
    return (
        f"{component}: could not load the model '{model}' ({reason}). "
        "This machine may have no access to the Hugging Face hub. Three ways out: "
        "(1) use a mirror: `export HF_ENDPOINT=https://hf-mirror.com` (any mirror of the hub) and train again; "
        f"(2) download the model once elsewhere (`huggingface-cli download {model} --local-dir ./models/{Path(str(model)).name}`), "
        f"copy the folder here and set `model: ./models/{Path(str(model)).name}` for {component} in config.yml; "
        f"(3) set `model: scratch` for {component} in config.yml to train a small model from your own data "
        "with nothing to download."
    )


def load_pretrained(
    component: str,
    model: str,
    loader: Callable[..., T],
    revision: Optional[str] = None,
    cache_dir: Optional[str] = None,
    **kwargs: Any,
) -> T:
    """Call ``loader(model, ...)`` (a ``from_pretrained``) and turn every failure into one clear error.

    A local folder is read with ``local_files_only=True``; a hub id honours ``revision``,
    ``cache_dir`` and the standard ``HF_ENDPOINT`` / ``HF_HOME`` / ``HF_HUB_OFFLINE`` variables
    (huggingface_hub reads those itself).
    """
    if is_local_folder(model):
        path = str(Path(os.path.expanduser(model)).resolve())
        try:
            return loader(path, local_files_only=True, **kwargs)
        except Exception as e:  # noqa: BLE001 - every failure gets the same clear message
            raise ModelUnavailableError(
                f"{component}: the local folder '{path}' does not hold a usable model ({type(e).__name__}: "
                f"{_first_line(e)}). It needs config.json, the weights (model.safetensors or "
                "pytorch_model.bin) and the tokenizer files (vocab.txt or tokenizer.json). "
                "Check the folder, or set `model: scratch`."
            ) from None
    hub_kwargs: Dict[str, Any] = {}
    if revision:
        hub_kwargs["revision"] = revision
    if cache_dir:
        hub_kwargs["cache_dir"] = os.path.expanduser(cache_dir)
    try:
        return loader(model, **hub_kwargs, **kwargs)
    except Exception as e:  # noqa: BLE001
        raise ModelUnavailableError(hub_failure_message(component, model, e, cache_dir)) from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else ""


def _chain(error: BaseException) -> list:
    """``error`` and the exceptions it was raised from or while handling."""
    out, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        out.append(error)
        error = error.__cause__ or error.__context__
    return out


def _is_cut_download(error: BaseException) -> bool:
    name = type(error).__name__
    return name in ("ChunkedEncodingError", "IncompleteRead", "ProtocolError") or "Consistency check failed" in str(
        error
    )


def _is_unreachable(error: BaseException) -> bool:
    """The hub or its cache has no such model, or cannot be reached: nothing was found to read."""
    import requests
    from huggingface_hub import errors

    kinds = (
        errors.LocalEntryNotFoundError,
        errors.OfflineModeIsEnabled,
        errors.RepositoryNotFoundError,
        errors.RevisionNotFoundError,
        errors.EntryNotFoundError,
        errors.HfHubHTTPError,
        requests.ConnectionError,
        requests.Timeout,
    )
    return isinstance(error, kinds)


def cache_folder(model: str, cache_dir: Optional[str] = None) -> Path:
    """Where huggingface_hub keeps the downloaded files of hub id ``model``."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    root = Path(os.path.expanduser(cache_dir)) if cache_dir else Path(constants.HF_HUB_CACHE)
    return root / repo_folder_name(repo_id=model, repo_type="model")


def hub_failure_message(component: str, model: str, error: BaseException, cache_dir: Optional[str] = None) -> str:
    """One clear message for a hub model that failed to load: a download cut short, a model that cannot be
    had (the three ways out), or files that were had but cannot be read (a damaged copy in the cache)."""
    chain = _chain(error)
    reason = f"{type(error).__name__}: {_first_line(error)}"
    if any(_is_cut_download(e) for e in chain):
        return (
            f"{component}: the download of the model '{model}' stopped before the end ({reason}): the copy in "
            f"{cache_folder(model, cache_dir)} is incomplete. Train again to download it again; if it keeps "
            "stopping, check the network or the mirror named by HF_ENDPOINT."
        )
    if any(_is_unreachable(e) for e in chain):
        return unavailable_message(component, model, reason)
    return (
        f"{component}: the model '{model}' was found, but its files cannot be read ({reason}): the copy in "
        f"{cache_folder(model, cache_dir)} is damaged or incomplete. Delete that folder and train again to "
        f"download it anew (or `huggingface-cli download {model} --force-download`)."
    )


def resolve_device(device: str) -> "torch.device":
    """``auto`` picks cuda, then mps, then cpu; a named device that is not there is a clear error."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RasaException("`device: cuda` was set but torch sees no CUDA GPU. Set `device: auto` or `device: cpu`.")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RasaException(
            "`device: mps` was set but this torch has no MPS backend. Set `device: auto` or `device: cpu`."
        )
    return torch.device(device)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
