"""Encoders beyond BERT: intents and entities with any encoder `AutoModel` loads, from a local folder. Tiny random
models of each type are built here, with their own tokenizers: WordPiece (BERT, ERNIE), byte-level BPE (RoBERTa)
and SentencePiece models trained on the test texts (ALBERT, XLM-R)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import pytest
from rasa.engine.storage.resource import Resource
from rasa.shared.exceptions import InvalidConfigException

from nlu_bert.classifiers.bert_intent_classifier import BertIntentClassifier

from entity_bot import examples, spans, training_data
from nlu_testing import make_context, make_storage, messages

SIZES = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
CONFIG = {"epochs": 40, "validation_split": 0.0, "learning_rate": 1e-3, "head_learning_rate": 5e-3}


def texts() -> list:
    return [m.get("text") for m in training_data().training_examples] + ["hello world 123 ＡＢＣ"]


def wordpiece(folder: Path) -> Any:
    from transformers import BertTokenizerFast

    from nlu_bert.vocab import build_char_vocab, write_vocab

    write_vocab(build_char_vocab(texts()), folder)
    return BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)


def byte_bpe(folder: Path) -> Any:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe.train_from_iterator(texts(), vocab_size=400, min_frequency=1, special_tokens=specials, show_progress=False)
    bpe.save_model(str(folder))
    return RobertaTokenizerFast(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"))


def sentencepiece_model(folder: Path) -> Path:
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts()),
        model_prefix=str(folder / "spm"),
        vocab_size=150,
        hard_vocab_limit=False,
        character_coverage=1.0,
        model_type="unigram",
        minloglevel=2,
    )
    return folder / "spm.model"


def albert_tokenizer(folder: Path) -> Any:
    from transformers import AlbertTokenizerFast

    return AlbertTokenizerFast(vocab_file=str(sentencepiece_model(folder)))


def xlmr_tokenizer(folder: Path) -> Any:
    from transformers import XLMRobertaTokenizerFast

    return XLMRobertaTokenizerFast(vocab_file=str(sentencepiece_model(folder)))


# (config class, extra config, tokenizer builder) of each encoder type
ENCODERS: Dict[str, Any] = {
    "bert": ("BertConfig", {}, wordpiece),
    "ernie": ("ErnieConfig", {"use_task_id": False}, wordpiece),
    "roberta": ("RobertaConfig", {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}, byte_bpe),
    "albert": ("AlbertConfig", {"embedding_size": 16}, albert_tokenizer),
    "xlm-roberta": ("XLMRobertaConfig", {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}, xlmr_tokenizer),
}


@pytest.fixture(scope="module", params=sorted(ENCODERS))
def encoder_folder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random model of one encoder type and its tokenizer, saved as a local folder."""
    import transformers
    from transformers import AutoModel

    config_class, extra, make_tokenizer = ENCODERS[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    tokenizer = make_tokenizer(folder)
    config = getattr(transformers, config_class)(
        vocab_size=len(tokenizer), max_position_embeddings=130, type_vocab_size=2, **SIZES, **extra
    )
    AutoModel.from_config(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def test_intents_and_entities_with_every_encoder_type(encoder_folder: Path, tmp_path: Path) -> None:
    storage, resource = make_storage(tmp_path), Resource("encoder")
    config = {"model": str(encoder_folder), **CONFIG}
    component = BertIntentClassifier.create(config, storage, resource, make_context())
    component.train(training_data())
    loaded = BertIntentClassifier.load(config, storage, resource, make_context())
    expected_backend = "native" if encoder_folder.name.startswith("bert") else "onnxruntime"
    assert loaded.predictor.backend == expected_backend and loaded.predictor.has_entities
    held_out = [m for m in examples(4, seed=7) if m.get("intent") != "greet"][:24]
    parsed = loaded.process(messages([m.get("text") for m in held_out]))
    intents = sum(p.get("intent")["name"] == m.get("intent") for p, m in zip(parsed, held_out))
    assert intents >= 0.7 * len(held_out)
    # the tokenizer's pieces may be longer than an entity (SentencePiece's "▁我想买"): count entities found with
    # the right type and offsets that are exact substrings, and spans equal to the annotation
    found = [e for p in parsed for e in p.get("entities") or []]
    assert found and all(p.get("text")[e["start"] : e["end"]] == e["value"] for p in parsed for e in p.get("entities"))
    assert all(not e["value"][0].isspace() and not e["value"][-1].isspace() for e in found)
    exact = sum(spans(p) == spans(m) for p, m in zip(parsed, held_out))
    assert exact >= 0.3 * len(held_out), f"{exact} of {len(held_out)}"


def test_native_says_at_train_time_that_it_computes_bert_only(encoder_folder: Path, tmp_path: Path) -> None:
    if encoder_folder.name.startswith("bert"):
        pytest.skip("native runs BERT")
    config = {"model": str(encoder_folder), **CONFIG, "inference": {"backend": "native"}}
    component = BertIntentClassifier.create(config, make_storage(tmp_path), Resource("encoder"), make_context())
    with pytest.raises(InvalidConfigException, match="computes BERT encoders only"):
        component.train(training_data(per_template=2))
