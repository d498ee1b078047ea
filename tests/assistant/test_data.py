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
    "nlu_bert.BertIntentClassifier",
    "nlu_bert.GPT2FewShotIntentClassifier",
    "RegexEntityExtractor",
    "EntitySynonymMapper",
    "FallbackClassifier",
    "rasa_project.nlu_components.WordlessMessageFallback",
]


@pytest.fixture(scope="module")
def nlu() -> TrainingData:
    return load_data(str(REPO_ROOT / "data" / "nlu.yml"))


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


def test_bert_learns_every_entity_and_regexes_stay_only_where_exactness_matters(
    nlu: TrainingData, domain: Domain
) -> None:
    annotated = {e["entity"] for m in nlu.training_examples for e in m.get("entities") or []}
    assert annotated == set(domain.entities) == {"order_id", "phone", "product", "quantity", "return_reason"}
    assert {r["name"] for r in nlu.regex_features} == {"order_id", "phone"}
    assert not nlu.lookup_tables  # products and reasons are learnt, not listed
    counts = defaultdict(int)
    for m in nlu.training_examples:
        for e in m.get("entities") or []:
            counts[e["entity"]] += 1
    assert min(counts.values()) >= 10, counts
    synonym_targets = set(nlu.entity_synonyms.values())
    assert {"蓝牙耳机", "质量问题"} <= synonym_targets


def test_no_example_keeps_the_quotes_of_a_quoted_line(nlu: TrainingData) -> None:
    # inside `examples: |` a line `- '[耳机](product)坏了'` is the text "'耳机坏了'": BERT would learn the quote
    quoted = [m.get("text") for m in nlu.training_examples if m.get("text")[:1] in "'\"" or m.get("text")[-1:] in "'\""]
    assert not quoted


def test_product_synonyms_name_products_of_the_shop_database(nlu: TrainingData) -> None:
    from rasa_project.db import PRODUCTS

    products = {name for name, *_ in PRODUCTS}
    annotated = {
        nlu.entity_synonyms.get(m.get("text")[e["start"] : e["end"]], e["value"])
        for m in nlu.training_examples
        for e in m.get("entities") or []
        if e["entity"] == "product"
    }
    assert products <= annotated
    product_synonyms = {k: v for k, v in nlu.entity_synonyms.items() if v in products}
    assert len(product_synonyms) >= 8


@pytest.fixture(scope="module")
def extractors(nlu: TrainingData, tmp_path_factory: pytest.TempPathFactory) -> Tuple:
    from rasa.engine.graph import ExecutionContext, GraphSchema
    from rasa.engine.storage.local_model_storage import LocalModelStorage
    from rasa.engine.storage.resource import Resource

    storage = LocalModelStorage(tmp_path_factory.mktemp("storage"))
    context = ExecutionContext(GraphSchema({}), model_id="data-test")
    config = _config("config.offline.yml")
    regex_config = next(c for c in config["pipeline"] if c["name"] == "RegexEntityExtractor")
    assert regex_config["use_lookup_tables"] is False
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
        ("我的无线耳机坏了", []),  # products and reasons: BERT's (synonyms below)
        ("你好", []),
        ("尾号5678", [("phone", "5678")]),
        ("手机号 13812345678", [("phone", "13812345678")]),
        ("2405180031", [("order_id", "2405180031")]),  # an order number is not a phone answer
        ("5678123", []),
    ],
)
def test_regexes_match_order_numbers_and_phone_digits(
    extractors: Tuple, text: str, expected: List[Tuple[str, str]]
) -> None:
    regex, synonyms = extractors
    messages = synonyms.process(regex.process([Message(data={"text": text})]))
    found = sorted((e["entity"], e["value"]) for e in messages[0].get("entities", []))
    assert found == sorted(expected)


@pytest.mark.parametrize(
    "text, entity, expected",
    [
        ("我的无线耳机坏了", ("product", "无线耳机"), "蓝牙耳机"),
        ("键盘多少钱", ("product", "键盘"), "机械键盘"),
        ("我的无线耳机坏了", ("return_reason", "坏了"), "质量问题"),
        ("衣服太大了", ("return_reason", "太大"), "尺寸不合适"),
        ("颜色跟图片不一样", ("return_reason", "跟图片不一样"), "与描述不符"),
    ],
)
def test_synonyms_map_what_bert_finds_to_the_databases_names(
    extractors: Tuple, text: str, entity: Tuple[str, str], expected: str
) -> None:
    _, synonyms = extractors
    start = text.index(entity[1])
    found = {"entity": entity[0], "start": start, "end": start + len(entity[1]), "value": entity[1]}
    found["extractor"] = "BertIntentClassifier"
    (message,) = synonyms.process([Message(data={"text": text, "entities": [found]})])
    assert message.get("entities")[0]["value"] == expected


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
    # an order is shown or changed only after the phone digits (rasa_project/actions/identity.py)
    assert domain.forms["order_form"]["required_slots"] == ["order_id", "phone_last4"]
    assert domain.forms["return_form"]["required_slots"] == ["order_id", "phone_last4", "return_reason"]


def test_verification_slots_cannot_be_filled_by_the_user(domain: Domain) -> None:
    slots = {slot.name: slot for slot in domain.slots}
    for name in ("verified_phone", "verify_failures"):
        assert [m["type"] for m in slots[name].mappings] == ["custom"], name


# What each intent inside a form leads to (data/rules.yml): answered and the form goes on, the form ends,
# or the message is the form's answer (checked by its validation).
ANSWERED = {"greet", "thanks", "chitchat", "out_of_scope", "ask_opening_hours", "ask_product", "ask_coupon"}
ENDS = {"deny", "goodbye", "human_handoff"}
SWITCH = {"order_form": {"request_return"}, "return_form": {"check_order_status", "check_logistics"}}


def _form_rules() -> Dict[Tuple[str, str], List[str]]:
    """(form, intent) -> the actions of the rule with that condition."""
    rules = yaml.safe_load((REPO_ROOT / "data" / "rules.yml").read_text(encoding="utf-8"))["rules"]
    found: Dict[Tuple[str, str], List[str]] = {}
    for rule in rules:
        loops = [c["active_loop"] for c in rule.get("condition", []) if "active_loop" in c]
        intents = [s["intent"] for s in rule["steps"] if "intent" in s]
        if loops and intents:
            found[(loops[0], intents[0])] = [s["action"] for s in rule["steps"] if "action" in s]
    return found


@pytest.mark.parametrize("form", ["order_form", "return_form"])
def test_every_intent_inside_every_form_has_its_way(domain: Domain, form: str) -> None:
    rules = _form_rules()
    not_an_answer = set(
        next(
            m
            for m in domain.as_dict()["slots"]["order_id"]["mappings"]
            if m["type"] == "from_text" and m["conditions"][0]["active_loop"] == form
        )["not_intent"]
    )
    for intent in domain.intents:
        actions = rules.get((form, intent))
        if intent in ANSWERED:
            assert actions and actions[-1] == form, f"{form}: {intent} must be answered, then the form goes on"
        elif intent in ENDS:
            assert actions and "action_deactivate_loop" in actions, f"{form}: {intent} must end the form"
        elif intent in SWITCH[form]:
            assert actions and actions[-1] != form and actions[-1].endswith("_form"), f"{form}: {intent} switches forms"
        else:  # read as the answer to the form's question
            assert actions is None and intent not in not_an_answer, f"{form}: {intent} is an answer"
        if actions is not None:
            assert intent in not_an_answer, f"{form}: {intent} has a rule, so it must not fill the form's slots"


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
def test_ted_does_not_extract_entities(name: str) -> None:
    # entities come from the NLU pipeline; TED's own extraction would be evaluated (F1 0.0) by `rasa test core`
    ted = next(p for p in _config(name)["policies"] if p["name"] == "TEDPolicy")
    assert ted["entity_recognition"] is False


@pytest.mark.parametrize(
    "text, fallback",
    [
        ("😀", True),
        ("😀" * 10, True),
        ("！！！。。。", True),
        ("👍", True),
        ("...", True),
        ("好的", False),
        ("ok", False),
        ("5678", False),
        ("  ", False),
    ],
)
def test_messages_without_words_are_not_understood(text: str, fallback: bool) -> None:
    from rasa_project.nlu_components import WordlessMessageFallback

    message = Message(
        data={
            "text": text,
            "intent": {"name": "affirm", "confidence": 0.58},
            "intent_ranking": [{"name": "affirm", "confidence": 0.58}, {"name": "deny", "confidence": 0.3}],
        }
    )
    WordlessMessageFallback().process([message])
    assert (message.get("intent")["name"] == "nlu_fallback") is fallback
    if fallback:
        assert [r["name"] for r in message.get("intent_ranking")] == ["nlu_fallback", "affirm", "deny"]


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
        [
            PYTHON,
            "-m",
            "rasa",
            "data",
            "validate",
            "--fail-on-warnings",
            "--config",
            "config.yml",
            "--domain",
            "domain.yml",
            "--data",
            *ASSISTANT_DATA,
        ],
        cwd=REPO_ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    problems = [line for line in output.splitlines() if "UserWarning" in line or "ERROR" in line]
    assert problems == [], "\n".join(problems)
