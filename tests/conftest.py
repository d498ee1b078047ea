"""Fixtures shared by every test: Rasa model storage, execution contexts, tiny data.

Model storage and execution contexts come from ``nlu_testing.make_storage`` / ``make_context`` only (fixtures here,
or the helpers where a test needs a module-scoped one). Nothing here downloads anything; tiny models are built by
the fixtures of each test folder (tests/bert, tests/fewshot) and ``gpt2_fixtures``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, List

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


@pytest.fixture(scope="module")
def policies(domain: Domain, tmp_path_factory: pytest.TempPathFactory) -> List[Any]:
    """MemoizationPolicy, RulePolicy and TEDPolicy as config.yml has them, trained on the sample assistant's stories
    and rules (TED for one epoch: the tests compare its predictions with and without a change, not their quality)."""
    from rasa.core.policies.memoization import MemoizationPolicy
    from rasa.core.policies.rule_policy import RulePolicy
    from rasa.core.policies.ted_policy import TEDPolicy

    from dialogue_fixtures import story_trackers

    storage = make_storage(tmp_path_factory.mktemp("policies"))
    context = make_context()
    trackers = story_trackers(domain)
    made = []
    for cls, config in (
        (MemoizationPolicy, {"max_history": 5}),
        (RulePolicy, {"core_fallback_threshold": 0.3, "enable_fallback_prediction": True}),
        (TEDPolicy, {"max_history": 5, "epochs": 1, "constrain_similarities": True, "entity_recognition": False}),
    ):
        policy = cls.create({**cls.get_default_config(), **config}, storage, Resource(cls.__name__), context)
        policy.train(trackers, domain)
        made.append(policy)
    return made
