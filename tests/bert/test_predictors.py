"""nlu_bert.bert.predictors: every backend / precision against torch fp32, export -> load round trips, threads, errors.

The models are tiny IntentModels (hidden 32, 2 layers, the characters of the tiny bot as vocabulary),
trained for a few seconds so that their top intents have real margins.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from nlu_bert import (
    archive,  # noqa: E402
    hardware,  # noqa: E402
    onnx_tools,  # noqa: E402
)
from nlu_bert.archive import NATIVE_FILE  # noqa: E402
from nlu_bert.bert import export as bert_export  # noqa: E402
from nlu_bert.bert import predictors  # noqa: E402
from nlu_bert.bert.model import IntentModel  # noqa: E402
from nlu_bert.bert.ngrams import batch_ngram_ids  # noqa: E402

from nlu_testing import REPO_ROOT, TINY_BOT  # noqa: E402

NGRAM_BUCKETS = 97
NGRAM_RANGE = (1, 3)

# Unseen texts too (same characters, other orders and lengths), so the check is not on training data only.
EXTRA_TEXTS = [
    "你好再见",
    "查一下退款",
    "订单到哪了再见",
    "我要查订单",
    "退货",
    "好",
    "晚上好我要退款申请",
    "拜拜啦你好",
]

# max |logit - fp32 logit| allowed, as a fraction of the largest |fp32 logit| of the batch (+ a floor)
TOLERANCE = {"fp32": (1e-4, 1e-5), "bf16": (0.03, 0.01), "int8": (0.04, 0.01)}

VARIANTS = [(b, p) for b in predictors.BACKENDS for p in predictors.SUPPORTED_PRECISIONS[b]]


# ------------------------------------------------------------------------------------------ fixtures
def _texts() -> Tuple[List[str], List[int], List[str]]:
    labels = list(TINY_BOT)
    texts, y = [], []
    for i, intent in enumerate(labels):
        texts += TINY_BOT[intent]
        y += [i] * len(TINY_BOT[intent])
    return texts, y, labels


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    from nlu_bert.vocab import build_char_vocab, make_tokenizer

    texts, _, _ = _texts()
    vocab = build_char_vocab(texts + EXTRA_TEXTS)
    return make_tokenizer(vocab, tmp_path_factory.mktemp("tokenizer"))


def _encode(tokenizer, texts: List[str], use_ngrams: bool, pad_to: int = 0) -> Dict[str, np.ndarray]:
    kwargs = {"padding": "max_length", "max_length": pad_to} if pad_to else {"padding": True}
    enc = tokenizer(texts, truncation=bool(pad_to), return_tensors="np", **kwargs)
    out = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
    out["ngram_ids"] = batch_ngram_ids(texts, NGRAM_BUCKETS, NGRAM_RANGE, 64) if use_ngrams else None
    return out


def _train_tiny(tokenizer, use_ngrams: bool) -> IntentModel:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer.get_vocab()),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    model = IntentModel(
        BertModel(config, add_pooling_layer=False),
        num_labels=len(TINY_BOT),
        ngram_buckets=NGRAM_BUCKETS if use_ngrams else 0,
        ngram_dim=16,
    )
    texts, y, _ = _texts()
    batch = _encode(tokenizer, texts, use_ngrams)
    inputs = [torch.from_numpy(batch["input_ids"]), torch.from_numpy(batch["attention_mask"])]
    if use_ngrams:
        inputs.append(torch.from_numpy(batch["ngram_ids"]))
    target = torch.tensor(y)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(60):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(*inputs), target)
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module", params=[False, True], ids=["tokens", "tokens+ngrams"])
def trained(request, tokenizer) -> Tuple[IntentModel, bool]:
    return _train_tiny(tokenizer, request.param), request.param


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """One export folder per onnxruntime precision, and one for native (each holds only what its backend needs)."""
    model, _ = trained
    folders = {}
    for precision in predictors.SUPPORTED_PRECISIONS["onnxruntime"]:
        folder = tmp_path_factory.mktemp(f"onnx_{precision}")
        written = bert_export.export_for_inference(model, folder, "onnxruntime", precision)
        assert written == [archive.BERT_ONNX_FILES[precision]]
        folders[precision] = folder
    folder = tmp_path_factory.mktemp("native")
    assert bert_export.export_for_inference(model, folder, "native", "int8", save_dtype="float32") == [NATIVE_FILE]
    folders["native"] = folder
    return folders


def _predictor(backend: str, precision: str, model: IntentModel, folders: Dict[str, Path], threads: int = 1):
    if backend == "torch":
        return predictors.load_predictor(Path("unused"), backend, precision, threads, model=copy.deepcopy(model))
    if backend == "native":
        return predictors.load_predictor(folders["native"], backend, precision, threads)
    return predictors.load_predictor(folders[precision], backend, precision, threads)


def _reference(model: IntentModel, batch: Dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        ngrams = None if batch["ngram_ids"] is None else torch.from_numpy(batch["ngram_ids"])
        return model(torch.from_numpy(batch["input_ids"]), torch.from_numpy(batch["attention_mask"]), ngrams).numpy()


def _batches(tokenizer, use_ngrams: bool) -> List[Dict[str, np.ndarray]]:
    texts, _, _ = _texts()
    every = texts + EXTRA_TEXTS
    return [
        _encode(tokenizer, every, use_ngrams),  # batch 56, padded to the longest
        _encode(tokenizer, every[:1], use_ngrams),  # batch 1, no padding
        _encode(tokenizer, ["好"], use_ngrams),  # 3 tokens
        _encode(tokenizer, every[5:12], use_ngrams, pad_to=40),  # batch 7, padded far beyond the longest
        _encode(tokenizer, [every[3] * 6, every[40]], use_ngrams),  # long and short together
    ]


# ------------------------------------------------------------------------------------------ accuracy
@pytest.mark.parametrize("backend,precision", VARIANTS)
def test_every_backend_matches_torch_fp32(backend, precision, trained, exported, tokenizer):
    model, use_ngrams = trained
    predictor = _predictor(backend, precision, model, exported)
    rel, floor = TOLERANCE[precision]
    agree, total = 0, 0
    for batch in _batches(tokenizer, use_ngrams):
        expected = _reference(model, batch)
        got = predictor(batch["input_ids"], batch["attention_mask"], batch["ngram_ids"])
        assert got.dtype == np.float32 and got.shape == expected.shape
        scale = float(np.abs(expected).max())
        assert np.abs(got - expected).max() <= rel * scale + floor, (backend, precision)
        agree += int((got.argmax(-1) == expected.argmax(-1)).sum())
        total += len(expected)
    assert agree == total, f"{backend}/{precision}: top intent differs from fp32 on {total - agree} of {total} inputs"


def test_padding_beyond_the_longest_row_changes_nothing(trained, exported, tokenizer):
    model, use_ngrams = trained
    texts = ["你好", "我的订单到哪了", "退款"]
    tight = _encode(tokenizer, texts, use_ngrams)
    padded = _encode(tokenizer, texts, use_ngrams, pad_to=48)
    for backend, precision in VARIANTS:
        predictor = _predictor(backend, precision, model, exported)
        a = predictor(tight["input_ids"], tight["attention_mask"], tight["ngram_ids"])
        b = predictor(padded["input_ids"], padded["attention_mask"], padded["ngram_ids"])
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 if precision == "fp32" else 1e-2)


@pytest.mark.parametrize("batch_size", [1, 2, 5, 33])
@pytest.mark.parametrize("length", [1, 7, 30])
def test_variable_batch_and_sequence_length(batch_size, length, trained, exported):
    model, use_ngrams = trained
    rng = np.random.default_rng(batch_size * 100 + length)
    vocab = model.encoder.config.vocab_size
    ids = rng.integers(5, vocab, (batch_size, length)).astype(np.int64)
    mask = np.ones_like(ids)
    lengths = rng.integers(1, length + 1, batch_size)
    for row, n in enumerate(lengths):
        mask[row, n:] = 0
        ids[row, n:] = 0
    ngrams = rng.integers(0, NGRAM_BUCKETS, (batch_size, 11)).astype(np.int64) if use_ngrams else None
    batch = {"input_ids": ids, "attention_mask": mask, "ngram_ids": ngrams}
    expected = _reference(model, batch)
    for precision in ("fp32", "int8"):
        got = _predictor("onnxruntime", precision, model, exported)(ids, mask, ngrams)
        assert got.shape == (batch_size, len(TINY_BOT))
        rel, floor = TOLERANCE[precision]
        assert np.abs(got - expected).max() <= rel * np.abs(expected).max() + floor


# ------------------------------------------------------------------------------------------ export / load
def test_export_writes_only_what_the_backend_needs(trained, tmp_path):
    model, _ = trained
    assert bert_export.export_for_inference(model, tmp_path / "torch", "torch", "int8") == []
    assert not (tmp_path / "torch").exists() or not any((tmp_path / "torch").iterdir())
    for precision in ("fp32", "int8"):
        folder = tmp_path / precision
        written = bert_export.export_for_inference(model, folder, "onnxruntime", precision)
        assert written == [archive.BERT_ONNX_FILES[precision]]
        assert sorted(p.name for p in folder.iterdir()) == written


def test_export_leaves_the_model_as_it_was(tokenizer, tmp_path):
    model = _train_tiny(tokenizer, use_ngrams=False)
    model.train()
    classes = [type(m) for m in model.modules()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bert_export.export_for_inference(model, tmp_path, "onnxruntime", "int8")
    assert model.training
    assert [type(m) for m in model.modules()] == classes
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_onnx_round_trip_from_a_fresh_folder(trained, exported, tokenizer, tmp_path):
    """What persist writes, a later process can load with nothing but the folder (and without torch)."""
    model, use_ngrams = trained
    batch = _encode(tokenizer, ["您好", "怎么退钱", "查询订单进度"], use_ngrams)
    folder = tmp_path / "copy"
    folder.mkdir()
    onnx = {p: exported[p] for p in predictors.SUPPORTED_PRECISIONS["onnxruntime"]}
    for src in onnx.values():
        for f in src.iterdir():
            (folder / f.name).write_bytes(f.read_bytes())
    for precision in onnx:
        first = predictors.load_predictor(exported[precision], "onnxruntime", precision, 1)
        again = predictors.load_predictor(folder, "onnxruntime", precision, 1)
        np.testing.assert_array_equal(
            first(batch["input_ids"], batch["attention_mask"], batch["ngram_ids"]),
            again(batch["input_ids"], batch["attention_mask"], batch["ngram_ids"]),
        )
    np.save(tmp_path / "ids.npy", batch["input_ids"])
    np.save(tmp_path / "mask.npy", batch["attention_mask"])
    ngrams = "None"
    if use_ngrams:
        np.save(tmp_path / "ngrams.npy", batch["ngram_ids"])
        ngrams = f"np.load({str(tmp_path / 'ngrams.npy')!r})"
    code = (
        "import sys, numpy as np\n"
        "from pathlib import Path\n"
        "from nlu_bert.bert.predictors import load_predictor\n"
        f"p = load_predictor(Path({str(folder)!r}), 'onnxruntime', 'int8', 1)\n"
        f"out = p(np.load({str(tmp_path / 'ids.npy')!r}), np.load({str(tmp_path / 'mask.npy')!r}), {ngrams})\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, out)\n"
        "assert 'torch' not in sys.modules, 'the onnxruntime predictor imported torch'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path)
    expected = predictors.load_predictor(folder, "onnxruntime", "int8", 1)(
        batch["input_ids"], batch["attention_mask"], batch["ngram_ids"]
    )
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)


def test_ngram_model_without_ngram_ids_is_a_clear_error(tokenizer, exported, trained):
    model, use_ngrams = trained
    if not use_ngrams:
        pytest.skip("model without n-gram features")
    batch = _encode(tokenizer, ["你好"], use_ngrams=False)
    for backend, precision in VARIANTS:
        predictor = _predictor(backend, precision, model, exported)
        with pytest.raises(ValueError, match="pass ngram_ids"):
            predictor(batch["input_ids"], batch["attention_mask"], None)


def test_missing_onnx_file_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape("Train again with this inference config")):
        predictors.load_predictor(tmp_path, "onnxruntime", "int8", 1)


def test_torch_backend_needs_the_model(tmp_path):
    with pytest.raises(ValueError, match=re.escape("pass model=")):
        predictors.load_predictor(tmp_path, "torch", "fp32", 1)


def test_bad_input_shapes_are_clear_errors(trained, exported):
    model, _ = trained
    predictor = _predictor("onnxruntime", "int8", model, exported)
    with pytest.raises(ValueError, match="same shape"):
        predictor(np.ones((2, 5), np.int64), np.ones((2, 4), np.int64), None)
    with pytest.raises(ValueError, match="at least one row"):
        predictor(np.ones((0, 5), np.int64), np.ones((0, 5), np.int64), None)


# ------------------------------------------------------------------------------------------ threads
def test_thread_settings_are_applied(trained, exported):
    model, _ = trained
    for threads in (1, 2):
        predictor = _predictor("onnxruntime", "int8", model, exported, threads=threads)
        assert predictor.session_options.intra_op_num_threads == threads
        assert predictor.session_options.inter_op_num_threads == 1
        assert predictor.num_threads == threads
    spinning = "session.intra_op.allow_spinning"
    assert predictor.session_options.get_session_config_entry(spinning) == ("1" if onnx_tools.ALLOW_SPINNING else "0")
    predictor = predictors.load_predictor(exported["int8"], "onnxruntime", "int8", 1, allow_spinning=True)
    assert predictor.session_options.get_session_config_entry(spinning) == "1"
    previous = torch.get_num_threads()
    try:
        predictor = _predictor("torch", "fp32", model, exported, threads=1)
        assert torch.get_num_threads() == 1 and predictor.num_threads == 1
        predictor = _predictor("torch", "int8", model, exported, threads=0)
        assert predictor.num_threads == hardware.available_cores() == torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


# ------------------------------------------------------------------------------------------ validation
def test_valid_settings_pass():
    for backend, precision in VARIANTS:
        predictors.validate_inference(backend, precision, 0)
        predictors.validate_inference(backend, precision, 4)
    assert predictors.DEFAULT_BACKEND == predictors.AUTO and predictors.DEFAULT_PRECISION == "int8"
    for precision in predictors.PRECISIONS:
        predictors.validate_inference(predictors.AUTO, precision, 0)


def test_auto_resolves_to_native_for_int8_bert_and_to_what_serves_the_rest():
    bert = {
        "model_type": "bert",
        "hidden_act": "gelu",
        "hidden_size": 768,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    }
    roberta = {**bert, "model_type": "roberta"}
    assert predictors.resolve_backend("auto", "int8", bert) == "native"
    assert predictors.resolve_backend("auto", "int8", roberta) == "onnxruntime"
    assert predictors.resolve_backend("auto", "int8", {**bert, "hidden_act": "gelu_new"}) == "onnxruntime"
    assert predictors.resolve_backend("auto", "fp32", bert) == "onnxruntime"
    assert predictors.resolve_backend("auto", "bf16", bert) == "torch"
    for backend in predictors.BACKENDS:  # a backend that is named is kept
        assert predictors.resolve_backend(backend, "int8", roberta) == backend


@pytest.mark.parametrize(
    "backend,precision,threads,message",
    [
        (
            "tensorrt",
            "fp32",
            0,
            "`inference.backend` must be one of 'auto', 'torch', 'onnxruntime', 'native', got 'tensorrt'.",
        ),
        ("torch", "fp16", 0, "`inference.precision` must be one of 'fp32', 'bf16', 'int8', got 'fp16'."),
        (
            "onnxruntime",
            "bf16",
            0,
            "`inference.precision` 'bf16' is not available with `inference.backend` 'onnxruntime' "
            "(allowed there: 'fp32', 'int8'). Use `inference.backend` 'torch' for bf16, or another precision.",
        ),
        (
            "native",
            "fp32",
            0,
            "`inference.precision` 'fp32' is not available with `inference.backend` 'native' "
            "(allowed there: 'int8'). Use `inference.backend` 'torch', 'onnxruntime' for fp32, or another precision.",
        ),
        ("torch", "int8", -1, "`inference.threads` must be an integer >= 0 (0 = all cores), got -1."),
        ("torch", "int8", 1.5, "`inference.threads` must be an integer >= 0 (0 = all cores), got 1.5."),
        ("torch", "int8", True, "`inference.threads` must be an integer >= 0 (0 = all cores), got True."),
        ("torch", "int8", "2", "`inference.threads` must be an integer >= 0 (0 = all cores), got '2'."),
    ],
)
def test_bad_settings_name_key_value_and_allowed_values(backend, precision, threads, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        predictors.validate_inference(backend, precision, threads)
    with pytest.raises(ValueError, match=re.escape(message)):
        predictors.load_predictor(Path("unused"), backend, precision, threads)


def test_key_names_follow_the_component():
    with pytest.raises(ValueError, match=re.escape("`precision` must be one of")):
        predictors.validate_inference("torch", "fp8", 0, key_names={"precision": "precision"})
