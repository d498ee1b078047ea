"""The sample assistant's training data, domain and configs: the issue's minimums, and consistency."""
from __future__ import annotations

import inspect
import subprocess
from collections import defaultdict
from typing import Dict, List, Set, Tuple

import pytest
import yaml
from rasa.nlu.extractors.entity_synonyms import EntitySynonymMapper
from rasa.nlu.extractors.regex_entity_extractor import RegexEntityExtractor
from rasa.shared.core.domain import Domain
from rasa.shared.nlu.training_data.loading import load_data
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData
from rasa_sdk import Action

from assistant_helpers import ASSISTANT_DATA, PYTHON, REPO_ROOT, subprocess_env

PIPELINE = [
    "JiebaTokenizer",
    "RegexEntityExtractor",
    "EntitySynonymMapper",
    "nlu_bert.BertIntentClassifier",
    "nlu_bert.GPT2FewShotIntentClassifier",
    "FallbackClassifier",
]


@pytest.fixture(scope="module")
def nlu() -> TrainingData:
    return load_data(str(REPO_ROOT / "data" / "nlu.yml"))


@pytest.fixture(scope="module")
def domain() -> Domain:
    return Domain.load(str(REPO_ROOT / "domain.yml"))


def _config(name: str) -> Dict:
    return yaml.safe_load((REPO_ROOT / name).read_text(encoding="utf-8"))


def test_at_least_12_intents_with_20_examples_each(nlu: TrainingData) -> None:
    counts: Dict[str, int] = defaultdict(int)
    for example in nlu.intent_examples:
        counts[example.get("intent")] += 1
    assert len(counts) >= 12, counts
    assert min(counts.values()) >= 20, {i: n for i, n in counts.items() if n < 20}


def test_no_sentence_is_labelled_with_two_intents(nlu: TrainingData) -> None:
    seen: Dict[str, Set[str]] = defaultdict(set)
    for example in nlu.intent_examples:
        seen[example.get("text")].add(example.get("intent"))
    assert {t: i for t, i in seen.items() if len(i) > 1} == {}


def test_every_domain_intent_has_examples(nlu: TrainingData) -> None:
    declared = yaml.safe_load((REPO_ROOT / "domain.yml").read_text(encoding="utf-8"))["intents"]
    assert set(declared) == set(nlu.intents)


def test_entities_come_from_regexes_lookups_and_synonyms(nlu: TrainingData, domain: Domain) -> None:
    regex_entities = {r["name"] for r in nlu.regex_features}
    lookup_entities = {t["name"] for t in nlu.lookup_tables}
    assert regex_entities == {"order_id"}
    assert lookup_entities == {"product", "return_reason"}
    assert len(set(domain.entities)) >= 2 and (regex_entities | lookup_entities) == set(domain.entities)
    synonym_targets = set(nlu.entity_synonyms.values())
    assert {"蓝牙耳机", "质量问题"} <= synonym_targets
    # every synonym is also in its lookup table, so RegexEntityExtractor finds it
    lookup_elements = {e for t in nlu.lookup_tables for e in t["elements"]}
    assert set(nlu.entity_synonyms) <= lookup_elements | set(nlu.entity_synonyms.values())


def test_product_lookup_matches_the_shop_database(nlu: TrainingData) -> None:
    from rasa_project.db import PRODUCTS

    products = {name for name, *_ in PRODUCTS}
    table = next(t for t in nlu.lookup_tables if t["name"] == "product")
    canonical = {nlu.entity_synonyms.get(e, e) for e in table["elements"]}
    assert canonical == products


def test_lookup_tables_list_longer_names_first(nlu: TrainingData) -> None:
    # Without word boundaries the regex takes the first alternative that matches at a position.
    for table in nlu.lookup_tables:
        for longer in table["elements"]:
            for shorter in table["elements"]:
                if shorter != longer and longer.startswith(shorter):
                    assert table["elements"].index(longer) < table["elements"].index(shorter), (longer, shorter)


@pytest.fixture(scope="module")
def extractors(nlu: TrainingData, tmp_path_factory: pytest.TempPathFactory) -> Tuple:
    from rasa.engine.graph import ExecutionContext, GraphSchema
    from rasa.engine.storage.local_model_storage import LocalModelStorage
    from rasa.engine.storage.resource import Resource

    storage = LocalModelStorage(tmp_path_factory.mktemp("storage"))
    context = ExecutionContext(GraphSchema({}), model_id="data-test")
    config = _config("config.offline.yml")
    regex_config = next(c for c in config["pipeline"] if c["name"] == "RegexEntityExtractor")
    regex_config = {k: v for k, v in regex_config.items() if k != "name"}
    regex = RegexEntityExtractor.create(
        {**RegexEntityExtractor.get_default_config(), **regex_config}, storage, Resource("regex"), context
    )
    regex.train(nlu)
    synonyms = EntitySynonymMapper.create(
        EntitySynonymMapper.get_default_config(), storage, Resource("synonyms"), context
    )
    synonyms.train(nlu)
    return regex, synonyms


@pytest.mark.parametrize(
    "text, expected",
    [
        ("订单2405180031到哪了", [("order_id", "2405180031")]),
        ("帮我查下 2405200117 的快递", [("order_id", "2405200117")]),
        ("单号24051800311对吗", []),  # 11 digits: not an order number
        ("我的无线耳机坏了", [("product", "蓝牙耳机"), ("return_reason", "质量问题")]),
        ("键盘多少钱", [("product", "机械键盘")]),
        ("衣服太大了", [("return_reason", "尺寸不合适")]),
        ("颜色跟图片不一样", [("return_reason", "与描述不符")]),
        ("你好", []),
    ],
)
def test_entities_extracted_and_normalised(extractors: Tuple, text: str, expected: List[Tuple[str, str]]) -> None:
    regex, synonyms = extractors
    messages = synonyms.process(regex.process([Message(data={"text": text})]))
    found = sorted((e["entity"], e["value"]) for e in messages[0].get("entities", []))
    assert found == sorted(expected)


def _implemented_actions() -> Set[str]:
    import importlib
    import pkgutil

    import rasa_project.actions as package

    names = set()
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Action) and cls.__module__ == module.__name__ and not inspect.isabstract(cls):
                names.add(cls().name())
    return names


def test_every_custom_action_in_the_domain_is_implemented(domain: Domain) -> None:
    custom = {a for a in domain.user_actions if not a.startswith("utter_")}
    assert custom == _implemented_actions()


def test_forms(domain: Domain) -> None:
    assert domain.forms["order_form"]["required_slots"] == ["order_id"]
    assert domain.forms["return_form"]["required_slots"] == ["order_id", "return_reason"]


@pytest.mark.parametrize("name", ["config.yml", "config.offline.yml"])
def test_config_pipeline_and_policies(name: str) -> None:
    config = _config(name)
    assert config["language"] == "zh"
    assert [c["name"] for c in config["pipeline"]] == PIPELINE
    assert {p["name"] for p in config["policies"]} == {"RulePolicy", "MemoizationPolicy", "TEDPolicy"}
    models = {c["name"]: c.get("model") for c in config["pipeline"]}
    if name == "config.yml":
        assert models["nlu_bert.BertIntentClassifier"] == "hfl/chinese-bert-wwm-ext"
        assert models["nlu_bert.GPT2FewShotIntentClassifier"] == "qgyd2021/few_shot_intent_gpt2_base"
    else:
        assert models["nlu_bert.BertIntentClassifier"] == "scratch"
        assert models["nlu_bert.GPT2FewShotIntentClassifier"] == "scratch"


@pytest.mark.parametrize("name", ["config.yml", "config.offline.yml"])
def test_config_keys_are_known_to_the_components(name: str) -> None:
    import nlu_bert

    for component in _config(name)["pipeline"]:
        if not component["name"].startswith("nlu_bert."):
            continue
        cls = getattr(nlu_bert, component["name"].split(".", 1)[1])
        unknown = set(component) - {"name"} - set(cls.get_default_config())
        assert not unknown, f"{name}: {component['name']} has unknown keys {sorted(unknown)}"


def test_rasa_data_validate_is_clean() -> None:
    result = subprocess.run(
        [PYTHON, "-m", "rasa", "data", "validate", "--fail-on-warnings", "--config", "config.yml",
         "--domain", "domain.yml", "--data", *ASSISTANT_DATA],
        cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    problems = [line for line in output.splitlines() if "UserWarning" in line or "ERROR" in line]
    assert problems == [], "\n".join(problems)
