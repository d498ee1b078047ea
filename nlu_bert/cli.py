"""The ``nlu-bert`` command line (also ``python -m nlu_bert.cli``).

Each subcommand registers itself with ``add_<name>_command(subparsers)`` and sets
``handler`` to a function ``(args) -> exit code``; add new subcommands the same way.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, List, Optional

from nlu_bert.version import __version__

Handler = Callable[[argparse.Namespace], int]


def _fraction(value: str) -> float:
    number = float(value)
    if not 0 < number < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {value}")
    return number


def _count(minimum: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        number = int(value)
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return number

    return parse


def add_convert_command(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    from nlu_bert.converters import FORMATS

    formats = "\n".join(f"  {name:<20} {fmt.description}" for name, fmt in FORMATS.items())
    parser = subparsers.add_parser(
        "convert",
        help="convert a dataset or a plain file into Rasa NLU YAML",
        description="Convert a dataset into Rasa 3.x NLU YAML, then load it back with Rasa's loader to check it.",
        epilog=f"formats:\n{formats}\n\nOUT: a .yml file (train) with OUT.dev.yml / OUT.test.yml beside it, "
        "or a folder that gets train.yml, dev.yml, test.yml.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("format", metavar="FORMAT", help="input format (listed below)")
    parser.add_argument("inputs", metavar="INPUT", nargs="+", type=Path, help="input files or folders")
    parser.add_argument("-o", "--out", required=True, type=Path, metavar="OUT", help="OUT.yml or an output folder")

    fields = parser.add_argument_group("fields (csv, tsv, json, jsonl, xlsx, massive, few-shot-intent-sft)")
    fields.add_argument(
        "--text-field", metavar="NAME", help="column/key of the text (default: text, sentence, query, review, …)"
    )
    fields.add_argument(
        "--label-field", metavar="NAME", help="column/key of the label (default: label, intent, category, …)"
    )
    fields.add_argument(
        "--split-field", metavar="NAME", help="column/key of the split (default: split if present; 'none' ignores it)"
    )
    fields.add_argument(
        "--no-header", action="store_true", help="csv/tsv/xlsx without a header row: fields are 1-based column numbers"
    )
    fields.add_argument("--sheet", metavar="NAME", help="xlsx sheet name (default: the first sheet)")
    fields.add_argument(
        "--encoding", metavar="CODEC", help="input encoding (default: UTF-8 with or without BOM, else GBK)"
    )

    labels = parser.add_argument_group("labels")
    labels.add_argument(
        "--label-map",
        type=Path,
        metavar="FILE",
        help="JSON object or 2-column csv/tsv: label → new label (empty/null drops the rows)",
    )
    labels.add_argument(
        "--label-rule",
        choices=("primary", "multi"),
        default="primary",
        help="crosswoz: one act+domain per turn (primary) or all of them joined by + (multi)",
    )
    labels.add_argument("--drop-conflicts", action="store_true", help="drop texts that occur under several intents")

    split = parser.add_argument_group("splits and sizes")
    split.add_argument(
        "--test-fraction",
        type=_fraction,
        metavar="F",
        help="re-split everything, stratified by intent, with this fraction in test",
    )
    split.add_argument(
        "--seed", type=int, default=42, metavar="N", help="seed of --test-fraction and --max-per-intent (default 42)"
    )
    split.add_argument(
        "--min-per-intent",
        type=_count(0),
        default=0,
        metavar="N",
        help="drop intents with fewer training examples than this",
    )
    split.add_argument(
        "--max-per-intent", type=_count(1), metavar="N", help="keep at most this many training examples per intent"
    )

    extra = parser.add_argument_group("lookup tables, reports, errors")
    extra.add_argument(
        "--lookup",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="extra lookup table: a one-entry-per-line .txt (name = file stem) or a folder of them",
    )
    extra.add_argument(
        "--no-lookups", action="store_true", help="skip the dictionaries a dataset ships (nlpcc2018, smp2019)"
    )
    extra.add_argument("--skip-bad", action="store_true", help="skip and count malformed rows instead of stopping")
    extra.add_argument(
        "--report", type=Path, metavar="FILE", help="write the full report (conflicts, drops, renames) as JSON"
    )
    extra.add_argument(
        "--domain", type=Path, metavar="FILE", help="also write a minimal domain.yml with the intents and entities"
    )
    extra.add_argument("-q", "--quiet", action="store_true", help="no progress bar; print only the files written")
    parser.set_defaults(handler=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from nlu_bert.converters import BuildOptions, ConversionError, ReadOptions, convert, format_summary, load_label_map

    try:
        read_options = ReadOptions(
            text_field=args.text_field,
            label_field=args.label_field,
            split_field=args.split_field,
            encoding=args.encoding,
            no_header=args.no_header,
            sheet=args.sheet,
            label_rule=args.label_rule,
            lookups=not args.no_lookups,
            skip_bad=args.skip_bad,
            progress=not args.quiet,
        )
        build_options = BuildOptions(
            test_fraction=args.test_fraction,
            seed=args.seed,
            min_per_intent=args.min_per_intent,
            max_per_intent=args.max_per_intent,
            drop_conflicts=args.drop_conflicts,
            label_map=load_label_map(args.label_map) if args.label_map else {},
        )
        dataset = convert(
            args.format,
            args.inputs,
            args.out,
            read_options,
            build_options,
            report_path=args.report,
            domain_path=args.domain,
            lookup_paths=args.lookup,
        )
    except ConversionError as error:
        print(f"nlu-bert convert: error: {error}", file=sys.stderr)
        return 1
    try:
        print("\n".join(dataset.report.files.values()) if args.quiet else format_summary(dataset))
        sys.stdout.flush()
    except BrokenPipeError:  # `nlu-bert convert … | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nlu-bert", description="Chinese NLU components for Rasa 3.6: tools.")
    parser.add_argument("--version", action="version", version=f"nlu-bert {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    add_convert_command(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
