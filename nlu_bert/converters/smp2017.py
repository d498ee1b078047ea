"""SMP2017-ECDT task 1: 31 domain labels, official train / develop / test splits.

Inputs: the ``Task1data`` folder (or any ``<split>_<label>.txt`` files): one utterance
per line, label = file name after the first ``_``, split = the part before it
(``develop`` → dev). Files may start with a BOM and use CRLF. The original
``data.json`` is read too when given explicitly: it is not valid JSON (the develop
object sits inside the train object without a key: ``{"0": {...}, …, {"0": {...}, …}}``);
its first object is train, the second develop; it holds no test set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Tuple

from nlu_bert.converters.base import (
    SPLITS,
    BadRows,
    ConversionError,
    Example,
    Fields,
    ReadOptions,
    SourceData,
    canonical_split,
    expand_inputs,
    numbered_lines,
    read_text,
    record_example,
)
from nlu_bert.converters.records import iter_json_records

_JSON_FIELDS = Fields(text="query", label="label", split=None)


def parse_file_name(path: Path) -> Tuple[str, str]:
    """``train_tvchannel.txt`` → (``train``, ``tvchannel``)."""
    prefix, _, label = path.stem.partition("_")
    split = canonical_split(prefix)
    if split is None or not label:
        raise ConversionError(
            f"{path}: SMP2017 files are named <split>_<label>.txt (e.g. train_weather.txt, develop_app.txt); "
            "rename it or use the tsv/csv format."
        )
    return split, label


def read_smp2017(inputs: Sequence[Path], options: ReadOptions) -> SourceData:
    source = SourceData()
    bad = BadRows(options.skip_bad, source.dropped)
    explicit_json = [p for p in inputs if p.is_file() and p.suffix.lower() == ".json"]
    others = [p for p in inputs if p not in explicit_json]
    for path in expand_inputs(others, "*_*.txt") if others else []:
        split, label = parse_file_name(path)
        for number, line in numbered_lines(read_text(path, options.encoding)):
            if line.strip():
                source.rows_read += 1
                source.examples.append(Example(text=line, intent=label, split=split, source=f"{path}:{number}"))
    for path in explicit_json:
        for part, number, record in iter_json_records(read_text(path, options.encoding), str(path)):
            source.rows_read += 1
            if part >= len(SPLITS):
                raise ConversionError(
                    f"{path}:{number}: expected at most {len(SPLITS)} JSON objects (train, develop, test)."
                )
            if not isinstance(record, dict):
                bad(f"{path}:{number}", "expected an object with 'query' and 'label'", "not an object")
                continue
            example = record_example(record, _JSON_FIELDS, f"{path}:{number}", bad, split=SPLITS[part])
            if example is not None:
                source.examples.append(example)
    return source
