"""Fixtures shared by every test: Rasa model storage, execution contexts, tiny data.

Model storage and execution contexts come from ``nlu_testing.make_storage`` / ``make_context`` only (fixtures here,
or the helpers where a test needs a module-scoped one). Nothing here downloads anything; tiny models are built by
the fixtures of each test folder (tests/bert, tests/fewshot) and ``gpt2_fixtures``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest

# No test may reach for the Hugging Face hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from rasa.engine.graph import ExecutionContext  # noqa: E402
from rasa.engine.storage.local_model_storage import LocalModelStorage  # noqa: E402
from rasa.engine.storage.resource import Resource  # noqa: E402
from rasa.shared.core.domain import Domain  # noqa: E402
from rasa.shared.nlu.training_data.training_data import TrainingData  # noqa: E402

from nlu_testing import REPO_ROOT, make_context, make_storage, tiny_training_data  # noqa: E402


@pytest.fixture
def model_storage(tmp_path: Path) -> LocalModelStorage:
    return make_storage(tmp_path / "model_storage")


@pytest.fixture
def execution_context() -> ExecutionContext:
    return make_context()


@pytest.fixture
def tiny_data() -> TrainingData:
    return tiny_training_data()


@pytest.fixture
def resource_factory() -> Callable[[str], Resource]:
    return lambda name: Resource(name)


@pytest.fixture(scope="module")
def domain() -> Domain:
    """The sample assistant's domain (domain.yml), loaded once per test module."""
    return Domain.load(str(REPO_ROOT / "domain.yml"))
