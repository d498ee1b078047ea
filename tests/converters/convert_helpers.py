"""Helpers for the converter tests: fixture paths, running a conversion, reading it back with Rasa.

A plain module (imported as ``convert_helpers``) rather than a conftest.py: several folders
of this test suite have a conftest.py, so ``from conftest import …`` is ambiguous.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import pytest
from rasa.shared.nlu.training_data.loading import load_data
from rasa.shared.nlu.training_data.training_data import TrainingData

from nlu_bert.converters import BuildOptions, Dataset, ReadOptions, convert

FIXTURES = Path(__file__).parent / "fixtures"
SHARED_DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"

# (surface text, entity, value) — how a test states an expected entity
EntityTriple = Tuple[str, str, str]


def fixture(*parts: str) -> Path:
    return FIXTURES.joinpath(*parts)


def shared_dataset(*parts: str) -> Path:
    """Path into ../shared/datasets (as tests/conftest.py's helper); skips the test where absent."""
    path = SHARED_DATASETS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not on this machine")
    return path


def run_convert(fmt: str, inputs: Sequence[Path], out: Path, **options: object) -> Dataset:
    """``convert`` with keyword options split between ReadOptions and BuildOptions by name."""
    read_keys = set(ReadOptions.__dataclass_fields__)
    read = ReadOptions(progress=False, **{k: v for k, v in options.items() if k in read_keys})
    build = BuildOptions(**{k: v for k, v in options.items() if k not in read_keys})
    return convert(fmt, list(inputs), out, read, build)


def read_back(path: Path) -> TrainingData:
    return load_data(str(path))


def entity_triples(data: TrainingData) -> Dict[Tuple[str, str], List[EntityTriple]]:
    """(text, intent) → sorted (surface, entity, value) of each example Rasa loaded."""
    return {
        (m.get("text"), m.get("intent")): sorted(
            (m.get("text")[e["start"] : e["end"]], e["entity"], e["value"]) for e in m.get("entities") or []
        )
        for m in data.training_examples
    }
