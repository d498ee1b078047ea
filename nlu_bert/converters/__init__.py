"""Dataset converters: public Chinese intent/slot datasets and plain files → Rasa NLU YAML.

``FORMATS`` maps each format name to its reader (one module per format). ``convert``
runs a reader, the shared pipeline (clean-up, renaming, dedup, split, caps), writes the
YAML files and checks them with Rasa's own loader::

    from nlu_bert.converters import BuildOptions, ReadOptions, convert
    dataset = convert("cais", [Path("CAIS")], Path("data/cais"), ReadOptions(), BuildOptions())
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

from nlu_bert.converters.base import (
    ConversionError,
    Dataset,
    Entity,
    Example,
    ReadOptions,
    Report,
    SourceData,
    read_lookup_files,
)
from nlu_bert.converters.cais import read_cais
from nlu_bert.converters.crosswoz import read_crosswoz
from nlu_bert.converters.few_shot_intent_sft import read_few_shot_intent_sft
from nlu_bert.converters.massive import read_massive
from nlu_bert.converters.nlpcc2018 import read_nlpcc2018
from nlu_bert.converters.pipeline import BuildOptions, build_dataset, load_label_map
from nlu_bert.converters.records import read_json, read_jsonl
from nlu_bert.converters.smp2017 import read_smp2017
from nlu_bert.converters.smp2019 import read_smp2019
from nlu_bert.converters.summary import format_summary, report_dict
from nlu_bert.converters.tabular import read_csv, read_tsv, read_xlsx
from nlu_bert.converters.verify import VerificationError, verify_files
from nlu_bert.converters.yaml_writer import render_domain, write_dataset


@dataclass(frozen=True)
class Format:
    name: str
    read: Callable[[Sequence[Path], ReadOptions], SourceData]
    description: str


FORMATS: Dict[str, Format] = {
    f.name: f
    for f in (
        Format("smp2017", read_smp2017, "SMP2017-ECDT task 1: <split>_<label>.txt files (or data.json)"),
        Format("smp2019", read_smp2019, "SMP2019-ECDT task 1: train.json (+ split files); domain.intent, slots"),
        Format("cais", read_cais, "CAIS: char-per-line BIOES files ch.<split> + ch.<split>.intent"),
        Format("nlpcc2018", read_nlpcc2018, "NLPCC 2018 task 4: tab-separated corpus with inline slot tags"),
        Format("crosswoz", read_crosswoz, "CrossWOZ: user turns of *_messages.json, intent from dialogue acts"),
        Format("massive", read_massive, "MASSIVE zh-CN: jsonl (intent-only copy or official release)"),
        Format("few-shot-intent-sft", read_few_shot_intent_sft, "few_shot_intent_sft jsonl: prompt/response/intent"),
        Format("csv", read_csv, "comma-separated file with a header (text + label columns)"),
        Format("tsv", read_tsv, "tab-separated file with a header (text + label columns)"),
        Format("json", read_json, "JSON list/object of records (text + label fields)"),
        Format("jsonl", read_jsonl, "one JSON record per line (text + label fields)"),
        Format("xlsx", read_xlsx, "Excel workbook, first sheet or --sheet (text + label columns)"),
    )
}


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise ConversionError(f"unknown format {name!r}; choose one of: {', '.join(FORMATS)}.")
    return FORMATS[name]


def convert(
    format_name: str,
    inputs: Sequence[Path],
    out: Path,
    read_options: ReadOptions = ReadOptions(),
    build_options: BuildOptions = BuildOptions(),
    report_path: Optional[Path] = None,
    domain_path: Optional[Path] = None,
    lookup_paths: Sequence[Path] = (),
) -> Dataset:
    """Read, build, write and verify; returns the dataset with its report (files, counts, drops)."""
    fmt = get_format(format_name)
    if not inputs:
        raise ConversionError("no input files given.")
    source = fmt.read(inputs, read_options)
    for name, entries in read_lookup_files(lookup_paths, read_options.encoding).items():
        source.lookups.setdefault(name, []).extend(entries)
    dataset = build_dataset(source, build_options)
    dataset.report.format = format_name
    dataset.report.inputs = [str(p) for p in inputs]
    paths = write_dataset(dataset, out)
    dataset.report.files = {split: str(path) for split, path in paths.items()}
    rasa_warnings = verify_files(paths, dataset.splits, dataset.synonyms, dataset.lookups)
    dataset.report.notes.extend(f"Rasa warned: {w}" for w in rasa_warnings[:5])
    dataset.report.verified = True
    if domain_path is not None:
        domain_path.parent.mkdir(parents=True, exist_ok=True)
        domain_path.write_text(render_domain(dataset), encoding="utf-8")
        dataset.report.files["domain"] = str(domain_path)
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        dataset.report.files["report"] = str(report_path)
        report_path.write_text(json.dumps(report_dict(dataset), ensure_ascii=False, indent=1), encoding="utf-8")
    return dataset


__all__ = [
    "FORMATS",
    "BuildOptions",
    "ConversionError",
    "Dataset",
    "Entity",
    "Example",
    "Format",
    "ReadOptions",
    "Report",
    "SourceData",
    "VerificationError",
    "build_dataset",
    "convert",
    "format_summary",
    "get_format",
    "load_label_map",
]
