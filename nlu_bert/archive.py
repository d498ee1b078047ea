"""What nlu-bert writes into the Rasa model archive, and the checks when it reads it back.

Each component writes into its own Rasa resource (a folder of the archive, ``components/<node>/``), only through
``ModelStorage.write_to`` / ``read_from``::

    BertIntentClassifier                       GPT2FewShotIntentClassifier
      meta.json                                  meta.json
      training_report.json                       training_report.json
      tokenizer/                                 model/   config.json, tokenizer files, and the scorer:
      what the inference backend loads:                   scorer.int8.onnx | scorer.onnx (onnxruntime)
        model.native.safetensors  (native)                or model.safetensors (torch)
        model.int8.onnx | model.onnx  (onnxruntime)      fewshot.json   a marker for nlu-bert 0.2.0 and older
        model.safetensors + encoder_config.json (torch)
      model.safetensors + encoder_config.json  the trainable weights in `save_dtype`
        (every backend, with `finetunable: true`) for `rasa train --finetune` and `warm_start_model`

``meta.json`` holds the component's name, its archive format, the nlu-bert version that wrote it, the labels and
how the model is served (``inference``). A component bumps its format whenever an older nlu-bert could no longer
serve what it writes; at load time each component refuses, with one :class:`ModelArchiveError` that names the
versions and the fix, a format it does not read, and an archive with missing or damaged files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple

from rasa.shared.exceptions import RasaException

from nlu_bert.version import __version__

BERT = "BertIntentClassifier"
GPT2 = "GPT2FewShotIntentClassifier"

META_FILE = "meta.json"
REPORT_FILE = "training_report.json"

# BertIntentClassifier: the tokenizer, and the file(s) of its inference backend
TOKENIZER_DIR = "tokenizer"
BERT_ONNX_FILES: Dict[str, str] = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
NATIVE_FILE = "model.native.safetensors"
BERT_WEIGHTS_FILE = "model.safetensors"
BERT_ENCODER_CONFIG_FILE = "encoder_config.json"
# what a warm start reads besides meta.json and the tokenizer (the torch backend serves from the same files)
BERT_TRAINING_FILES = [BERT_WEIGHTS_FILE, BERT_ENCODER_CONFIG_FILE]

# GPT2FewShotIntentClassifier: one folder with the model's config, tokenizer and scorer (or weights)
GPT2_MODEL_DIR = "model"
GPT2_ONNX_FILES: Dict[str, str] = {"fp32": "scorer.onnx", "int8": "scorer.int8.onnx"}
# nlu-bert 0.1.0 and 0.2.0 kept the GPT-2 metadata in fewshot.json and read only that file. A format-3 archive
# writes there a stub with its format and version, so that those releases refuse it with their clear message
# instead of treating the resource as untrained (and silently never acting).
LEGACY_GPT2_META_FILE = "fewshot.json"


def bert_files(backend: str, precision: str) -> List[str]:
    """What BertIntentClassifier's ``backend`` loads (besides meta.json): only these go into the archive."""
    if backend == "onnxruntime":
        return [BERT_ONNX_FILES[precision], TOKENIZER_DIR]
    if backend == "native":
        return [NATIVE_FILE, TOKENIZER_DIR]
    return [BERT_WEIGHTS_FILE, BERT_ENCODER_CONFIG_FILE, TOKENIZER_DIR]


class Format(NamedTuple):
    writes: int
    reads: tuple


FORMATS: Dict[str, Format] = {
    # 1: nlu-bert 0.1.0 and later. 2 (0.3.0): a model with an entity head (meta.json's `entities`: its tags, tagger
    # and CRF scores; a second output of the ONNX graph, the head's tensors in the native file), which an older
    # nlu-bert would load and serve without its entities. A model without entities is still written as format 1.
    BERT: Format(writes=2, reads=(1, 2)),
    # 1: nlu-bert 0.1.0. 2 (0.2.0): the int8 scorer's key/value cache goes in and out in fp16, which 0.1.0 would
    # feed fp32. 3 (0.3.0): meta.json and training_report.json as for BERT (fewshot.json before); the files of
    # the model are the same as in format 2.
    GPT2: Format(writes=3, reads=(1, 2, 3)),
}


class ModelArchiveError(RasaException):
    """A component's files in the Rasa model archive are missing, damaged or of a format this nlu-bert does not
    read. The message names the component, the problem and the fix."""


def damaged(component: str, folder: Path, problem: str) -> ModelArchiveError:
    return ModelArchiveError(
        f"{component}: the model archive is damaged or incomplete: {problem} (in {folder}). "
        "Train the model again with `rasa train`."
    )


def write_meta(folder: Path, component: str, meta: Dict[str, Any]) -> Dict[str, Any]:
    """``meta`` with the component, its archive format and this nlu-bert's version, written to meta.json."""
    meta = {
        "component": component,
        "archive_format": _format_of(component, meta),
        "nlu_bert_version": __version__,
        **meta,
    }
    _write_json(folder / META_FILE, meta)
    if component == GPT2:
        stub = {k: meta[k] for k in ("component", "archive_format", "nlu_bert_version")}
        _write_json(folder / LEGACY_GPT2_META_FILE, stub)
    return meta


def _format_of(component: str, meta: Dict[str, Any]) -> int:
    if component == BERT and not meta.get("entities"):
        return 1  # what nlu-bert 0.1.0 and 0.2.0 serve exactly as this one does
    return FORMATS[component].writes


def read_meta(folder: Path, component: str) -> Dict[str, Any]:
    """The component's meta.json (a GPT-2 archive of format 1 or 2: fewshot.json), checked: a missing or unreadable
    file, or a format this nlu-bert does not read, is a :class:`ModelArchiveError`."""
    path = folder / META_FILE
    if component == GPT2 and not path.is_file() and (folder / LEGACY_GPT2_META_FILE).is_file():
        path = folder / LEGACY_GPT2_META_FILE
    if not path.is_file():
        raise damaged(component, folder, f"{META_FILE} is missing")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise damaged(component, folder, f"{path.name} is unreadable ({e})") from None
    meta = meta if isinstance(meta, dict) else {}
    reads = FORMATS[component].reads
    if meta.get("archive_format") not in reads:
        formats = f"format {reads[0]}" if len(reads) == 1 else f"formats {', '.join(map(str, reads))}"
        raise ModelArchiveError(
            f"{component}: this model was trained by nlu-bert {meta.get('nlu_bert_version', '?')} with archive "
            f"format {meta.get('archive_format')!r}; this nlu-bert ({__version__}) reads {formats}. Train the model "
            "again with `rasa train`, or install the nlu-bert version that trained it."
        )
    return meta


def require_files(folder: Path, component: str, names: Iterable[str]) -> None:
    """Every one of ``names`` (paths relative to ``folder``) exists, else a :class:`ModelArchiveError`."""
    for name in names:
        if not (folder / name).exists():
            raise damaged(component, folder, f"{name} is missing")


def require_bert_files(folder: Path, meta: Mapping[str, Any], backend: str, precision: str) -> None:
    """What BertIntentClassifier's ``backend`` / ``precision`` loads is in ``folder``, else a
    :class:`ModelArchiveError` that says whether the archive was made for another inference config."""
    made = meta.get("inference") or {}
    missing = [name for name in bert_files(backend, precision) if not (folder / name).exists()]
    if missing and made and (made.get("backend"), made.get("precision")) != (backend, precision):
        raise ModelArchiveError(
            f"{BERT}: this model was exported for `inference.backend` '{made.get('backend')}' "
            f"with `inference.precision` '{made.get('precision')}', but the config asks for "
            f"'{backend}' / '{precision}' ({missing[0]} is not in the archive). Train again with "
            "this inference config, or set it back."
        )
    require_files(folder, BERT, missing)


def write_report(folder: Path, report: Dict[str, Any]) -> None:
    _write_json(folder / REPORT_FILE, report)


def read_report(folder: Path) -> Dict[str, Any]:
    """The training report ({} where there is none, or it is unreadable: it is for people, not for serving)."""
    try:
        report = json.loads((folder / REPORT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return report if isinstance(report, dict) else {}


def _write_json(path: Path, data: Dict[str, Any]) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
