"""The benchmark datasets: where each lives in ../shared/datasets and how `nlu-bert convert` turns it into
train/test NLU YAML (official splits where the source has them). Converted files go to a git-ignored folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"


@dataclass(frozen=True)
class BenchmarkDataset:
    format: str
    inputs: Tuple[str, ...]
    read_options: Dict[str, object] = field(default_factory=dict)
    test_fraction: Optional[float] = None  # None: keep the source's own test split


DATASETS: Dict[str, BenchmarkDataset] = {
    "smp2017": BenchmarkDataset("smp2017", ("smp2017_ecdt_task1/raw/Task1data",)),
    "massive": BenchmarkDataset("massive", ("massive_zh_cn_intent/raw/amazon_massive_intent_zh_cn.jsonl",)),
    "smp2019": BenchmarkDataset("smp2019", ("smp2019_ecdt_task1/raw",)),
    "cais": BenchmarkDataset("cais", ("cais/raw",)),
    "nlpcc2018": BenchmarkDataset("nlpcc2018", ("nlpcc2018_task4_slu/raw",), test_fraction=0.2),
    # the public train split is missing: the converter trains on the val dialogues and tests on the test ones
    "crosswoz": BenchmarkDataset("crosswoz", ("crosswoz/raw",)),
    "telemarketing": BenchmarkDataset(
        "jsonl",
        ("telemarketing_intent_cn/raw/telemarketing_intent_cn.jsonl",),
        {"text_field": "text", "label_field": "label", "split_field": "split"},
    ),
}


def prepare_dataset(name: str, work: Path) -> Tuple[Path, Path]:
    """(train.yml, test.yml) for ``name``, converted once into ``work/<name>/``."""
    from nlu_bert.converters import BuildOptions, ReadOptions, convert

    spec = DATASETS[name]
    out = work / name / "nlu.yml"
    report = work / name / "report.json"
    if not report.exists():
        inputs = [SHARED / p for p in spec.inputs]
        missing = [str(p) for p in inputs if not p.exists()]
        if missing:
            raise SystemExit(
                f"dataset {name}: {', '.join(missing)} not found (the shared datasets live in ../shared/datasets)"
            )
        options = {k: v for k, v in spec.read_options.items() if k in ReadOptions.__dataclass_fields__}
        dataset = convert(
            spec.format,
            inputs,
            out,
            ReadOptions(**options),
            BuildOptions(test_fraction=spec.test_fraction, seed=42),
            report_path=report,
        )
        files = dataset.report.files
    else:
        import json

        files = json.loads(report.read_text(encoding="utf-8"))["files"]
    if "test" not in files:
        raise SystemExit(f"dataset {name}: the conversion wrote no test split ({files})")
    # the report keeps the paths as they were given at conversion time (maybe relative to another working
    # directory, or another --work); the files themselves sit next to the report
    return out.parent / Path(files["train"]).name, out.parent / Path(files["test"]).name
