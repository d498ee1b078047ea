"""Generic ``csv``, ``tsv`` and ``xlsx`` inputs: one example per row.

The first non-blank row is the header; text and label columns are auto-detected
(``text``/``sentence``/``review``…, ``label``/``intent``…, any case) or named with
``--text-field`` / ``--label-field``; a ``split`` column is used when present. With
``--no-header`` the fields are 1-based column numbers (default: text 1, label 2).
``tsv`` does not treat quotes specially (Chinese text often has unbalanced ones).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from nlu_bert.converters.base import (
    BadRows,
    ConversionError,
    Fields,
    ReadOptions,
    SourceData,
    empty_input,
    expand_inputs,
    progress,
    read_text,
    record_example,
    resolve_fields,
)

Row = Tuple[str, List[Any]]  # ("file:line" or "file sheet 'x' row n", cells)


def delimited_rows(path: Path, options: ReadOptions, delimiter: str) -> Iterator[Row]:
    """Rows of a csv/tsv file with the physical line each row starts on."""
    text = read_text(path, options.encoding)
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    line = 1
    try:
        for row in reader:
            yield f"{path}:{line}", row
            line = reader.line_num + 1
    except csv.Error as error:
        raise ConversionError(
            f"{path}:{reader.line_num}: cannot read this csv row ({error}). Fix the quoting of that row."
        ) from None


def xlsx_rows(path: Path, options: ReadOptions) -> Iterator[Row]:
    """Rows of one sheet of an .xlsx workbook (``--sheet``, default the first sheet)."""
    import zipfile

    import openpyxl

    if path.stat().st_size == 0:
        raise empty_input(path)
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError) as error:
        raise ConversionError(
            f"{path}: not an .xlsx workbook ({error}). Save it as .xlsx, or convert it as csv."
        ) from None
    try:
        if options.sheet is not None and options.sheet not in workbook.sheetnames:
            raise ConversionError(
                f"{path}: no sheet {options.sheet!r}; the sheets are {workbook.sheetnames}. Check --sheet."
            )
        sheet = workbook[options.sheet] if options.sheet else workbook.worksheets[0]
        for number, row in enumerate(sheet.iter_rows(values_only=True), start=1):
            yield f"{path} sheet {sheet.title!r} row {number}", list(row)
    finally:
        workbook.close()


def _blank(cells: Sequence[Any]) -> bool:
    return all(cell is None or (isinstance(cell, str) and not cell.strip()) for cell in cells)


def rows_to_source(rows: Iterator[Row], path: Path, options: ReadOptions, source: SourceData, bad: BadRows) -> None:
    """Header, field resolution and one example per data row."""
    header: Optional[List[str]] = None
    fields: Optional[Fields] = None
    for where, cells in progress(rows, path.name, options.progress):
        if _blank(cells):
            continue
        if fields is None:
            if options.no_header:
                header = [str(i) for i in range(1, len(cells) + 1)]
                fields = resolve_fields(header, options, where, ("1",), ("2",))
            else:
                header = [
                    str(c).strip() if c is not None and str(c).strip() else f"column {i}"
                    for i, c in enumerate(cells, start=1)
                ]
                fields = resolve_fields(header, options, where)
                continue
        assert header is not None
        source.rows_read += 1
        if len(cells) > len(header) and not _blank(cells[len(header) :]):
            bad(where, f"the row has {len(cells)} cells but the header has {len(header)}", "too many cells")
            continue
        record: Dict[str, Any] = dict(zip(header, cells))
        example = record_example(record, fields, where, bad)
        if example is not None:
            source.examples.append(example)


def _read(inputs: Sequence[Path], options: ReadOptions, pattern: str, delimiter: Optional[str]) -> SourceData:
    source = SourceData()
    bad = BadRows(options.skip_bad, source.dropped)
    for path in expand_inputs(inputs, pattern):
        rows = delimited_rows(path, options, delimiter) if delimiter else xlsx_rows(path, options)
        before = source.rows_read
        rows_to_source(rows, path, options, source, bad)
        if source.rows_read == before:
            raise ConversionError(f"{path}: no data rows below the header. Check the file, or --no-header.")
    return source


def read_csv(inputs: Sequence[Path], options: ReadOptions) -> SourceData:
    return _read(inputs, options, "*.csv", ",")


def read_tsv(inputs: Sequence[Path], options: ReadOptions) -> SourceData:
    return _read(inputs, options, "*.tsv", "\t")


def read_xlsx(inputs: Sequence[Path], options: ReadOptions) -> SourceData:
    return _read(inputs, options, "*.xlsx", None)
