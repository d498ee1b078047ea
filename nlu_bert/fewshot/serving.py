"""The few-shot model as ``rasa run`` serves it from the archive: the onnxruntime scorer (no torch, no
transformers), or the torch model in its serving dtype, and which of the two an archive and a config ask for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import rasa.shared.utils.io
from rasa.shared.exceptions import RasaException

from nlu_bert import archive, backbones, extras

COMPONENT = archive.GPT2
# onnxruntime's `auto`: int8 was 2-2.5x faster than fp32 and a quarter of its memory, and chose the same answer
# as fp32 for every one of 967 SMP2017 test messages (docs/inference.md); fp32 gives torch's scores to 1e-4
ONNX_AUTO_PRECISION = "int8"


@dataclass
class Loaded:
    tokenizer: Any
    model: Any = None  # the torch model (torch backend)
    scorer: Any = None  # the onnxruntime scorer (onnxruntime backend)
    model_config: Any = None  # the model's config.json (onnxruntime backend)


def precision(config: Mapping[str, Any]) -> str:
    """The precision the configured backend serves in (``auto`` resolved)."""
    setting = config["inference"]["precision"]
    if config["inference"]["backend"] == "onnxruntime":
        return ONNX_AUTO_PRECISION if setting == "auto" else setting
    from nlu_bert.fewshot.scoring import resolve_precision

    return resolve_precision(setting, backbones.resolve_device(config["device"]))


def torch_precision(config: Mapping[str, Any]) -> str:
    """The precision torch serves in: the configured one, or for an onnxruntime config served by torch (an archive
    from before the ONNX scorer) fp32 when asked for, else torch's ``auto``."""
    if config["inference"]["backend"] == "torch":
        return precision(config)
    from nlu_bert.fewshot.scoring import resolve_precision

    setting = "fp32" if config["inference"]["precision"] == "fp32" else "auto"
    return resolve_precision(setting, backbones.resolve_device(config["device"]))


def serving_backend(meta: Dict[str, Any], configured: str) -> str:
    """The backend the archive was written for. Archives from before the ONNX scorer hold torch weights only: they
    are served by torch, with a warning when the config asks for onnxruntime."""
    stored = (meta.get("inference") or {}).get("backend")
    if stored is None:
        if configured != "torch":
            rasa.shared.utils.io.raise_warning(
                f"{COMPONENT}: this model was trained before nlu-bert exported the GPT-2 scorer to ONNX, so it "
                f"is served with `inference.backend` 'torch' instead of '{configured}'. Train the model again "
                "with `rasa train` for the onnxruntime backend (about 0.5 GB less memory)."
            )
        return "torch"
    if stored != configured:
        raise archive.ModelArchiveError(
            f"{COMPONENT}: the model archive holds a scorer for `inference.backend: {stored}`, but the config "
            f"says `inference.backend: {configured}`. Set `inference: {{backend: {stored}}}`, or train the model "
            "again with `rasa train`."
        )
    return stored


def load(folder: Path, meta: Dict[str, Any], config: Mapping[str, Any]) -> Loaded:
    """What serves the archive in ``folder`` under ``config``; a mismatch with the config or damaged files are a
    :class:`~nlu_bert.archive.ModelArchiveError`."""
    inference = config["inference"]
    try:
        if serving_backend(meta, inference["backend"]) == "onnxruntime":
            return _load_onnx(folder, meta, config)
        return _load_torch(folder, config)
    except RasaException:  # ModelArchiveError, or a device that is not there: their own messages
        raise
    except Exception as e:  # noqa: BLE001 - any damage to these files gets the same message
        raise archive.damaged(COMPONENT, folder, f"{type(e).__name__}: {e}") from None


def _load_onnx(folder: Path, meta: Dict[str, Any], config: Mapping[str, Any]) -> Loaded:
    from nlu_bert.fewshot import onnx_scorer

    stored: Optional[str] = meta["inference"].get("precision")
    setting = config["inference"]["precision"]
    if setting not in ("auto", stored):
        raise archive.ModelArchiveError(
            f"{COMPONENT}: the model archive holds the {stored} scorer, but the config says "
            f"`inference.precision: {setting}`. Set `inference: {{precision: {stored}}}` (or auto), or train "
            "the model again with `rasa train`."
        )
    inference = config["inference"]
    scorer, tokenizer, model_config = onnx_scorer.load(
        folder, meta, config["prefix_cache_size"], inference["threads"], inference["spinning"]
    )
    return Loaded(tokenizer, scorer=scorer, model_config=model_config)


def _load_torch(folder: Path, config: Mapping[str, Any]) -> Loaded:
    extras.require_train(COMPONENT, "serving with `inference.backend: torch`")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nlu_bert.fewshot.scoring import precision_dtype

    path = str(folder / archive.GPT2_MODEL_DIR)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    # straight into the serving dtype: no fp32 copy on the way (half the memory for bf16)
    dtype = precision_dtype(torch_precision(config))
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, torch_dtype=dtype)
    if config["inference"]["threads"]:
        import torch

        torch.set_num_threads(config["inference"]["threads"])  # process-wide, as for BERT's torch backend
    model.to(backbones.resolve_device(config["device"]))
    return Loaded(tokenizer, model=model)
