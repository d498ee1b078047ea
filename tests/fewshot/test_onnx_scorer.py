"""The onnxruntime GPT-2 scorer: export, the same numbers as torch, the torch-free tokenizer."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

from nlu_bert import archive
from nlu_bert.fewshot import export as fewshot_export
from nlu_bert.fewshot import onnx_scorer
from nlu_bert.fewshot.prompts import ExampleBank, PromptEncoder
from nlu_bert.fewshot.scoring import CandidateScorer

from gpt2_fixtures import (
    LABELS,
    NOT_APPLICABLE,
    one_thread,  # noqa: F401  (autouse: one torch thread)
    synthetic_bot,
    tiny_gpt2,
    tiny_tokenizer,
)


@pytest.fixture(scope="module")
def bot():
    return synthetic_bot()


@pytest.fixture(scope="module")
def tokenizer_dir(bot, tmp_path_factory: pytest.TempPathFactory) -> Path:
    train, _ = bot
    folder = tmp_path_factory.mktemp("tok")
    tiny_tokenizer([t for ts in train.values() for t in ts] + list(LABELS.values()), folder)
    return folder


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


@pytest.fixture(scope="module")
def model(tokenizer) -> Any:
    return tiny_gpt2(len(tokenizer), seed=3)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    folder = tmp_path_factory.mktemp("onnx")
    out: Dict[str, Any] = {}
    for precision in onnx_scorer.PRECISIONS:
        path = folder / archive.GPT2_ONNX_FILES[precision]
        out[precision] = (path, fewshot_export.export_scorer(model, path, precision))
    return out


def _prompt(encoder: PromptEncoder, bot, intents: List[str], text: str) -> Any:
    bank = ExampleBank(bot[0])
    prefix, _ = encoder.fit_prefix([(LABELS[i], bank.prototypes(i, 2)) for i in intents])
    options = [encoder.answer_ids(LABELS[i]) for i in intents] + [encoder.answer_ids(NOT_APPLICABLE)]
    return prefix, encoder.query_ids(text), options


@pytest.mark.parametrize("anchored", [False, True])
def test_fp32_graph_gives_torchs_scores(model, encoder, bot, exported, anchored: bool) -> None:
    anchor = encoder.prefix_budget() if anchored else None
    path, report = exported["fp32"]
    assert report["probe_max_abs_diff"] < 1e-4
    onnx = onnx_scorer.OnnxCandidateScorer(path, num_threads=1, cache_size=4, position_anchor=anchor)
    torch_scorer = CandidateScorer(model, cache_size=0, position_anchor=anchor)
    for intents, text in [
        (["weather", "music", "taxi"], "明天下雨吗"),
        (["food", "alarm"], "订个闹钟"),
        (["taxi"], "x"),
    ]:
        prefix, query, options = _prompt(encoder, bot, intents, text)
        reference = torch_scorer.score(prefix, query, options, mode="naive").log_likelihoods
        for mode in onnx_scorer.MODES:
            got = onnx.score(prefix, query, options, mode=mode)
            assert got.log_likelihoods == pytest.approx(reference, abs=1e-4), mode
        again = onnx.score(prefix, query, options)
        assert again.cache_hit and again.log_likelihoods == pytest.approx(reference, abs=1e-4)


def test_int8_graph_is_smaller_and_close(model, encoder, bot, exported) -> None:
    (fp32_path, _), (int8_path, report) = exported["fp32"], exported["int8"]
    assert int8_path.stat().st_size < fp32_path.stat().st_size
    fp32 = onnx_scorer.OnnxCandidateScorer(fp32_path, num_threads=1)
    int8 = onnx_scorer.OnnxCandidateScorer(int8_path, num_threads=1)
    assert int8.precision == "int8" and fp32.precision == "fp32"
    prefix, query, options = _prompt(encoder, bot, ["weather", "music", "taxi"], "明天下雨吗")
    a = np.asarray(fp32.score(prefix, query, options).log_likelihoods)
    b = np.asarray(int8.score(prefix, query, options).log_likelihoods)
    assert np.max(np.abs(a - b)) < 0.05 and report["probe_max_abs_diff"] < 0.05
    import onnx

    # the int8 graph's embedding lookups read fp16 tables (half the memory); the fp32 graph stays all fp32
    tables = {
        p: {i.name: i.data_type for i in onnx.load(str(exported[p][0])).graph.initializer} for p in ("fp32", "int8")
    }
    lookups = {name for name in tables["int8"] if name.endswith(("wte.weight", "wpe.weight"))}
    assert len(lookups) == 2 and all(tables["int8"][n] == onnx.TensorProto.FLOAT16 for n in lookups)
    assert all(tables["fp32"][n] == onnx.TensorProto.FLOAT for n in lookups)
    # and the int8 graph's key/value cache goes in and out in fp16
    assert {i.type for i in int8.session.get_inputs() if i.name.startswith("past_")} == {"tensor(float16)"}
    assert {o.type for o in int8.session.get_outputs() if o.name.startswith("present_")} == {"tensor(float16)"}
    assert {i.type for i in fp32.session.get_inputs() if i.name.startswith("past_")} == {"tensor(float)"}


def test_the_int8_scorers_prefix_cache_takes_half_the_bytes(encoder, bot, exported) -> None:
    prefix, query, options = _prompt(encoder, bot, ["weather", "music", "taxi"], "明天下雨吗")
    cached = {}
    for precision in ("fp32", "int8"):
        scorer = onnx_scorer.OnnxCandidateScorer(exported[precision][0], num_threads=1, cache_size=2)
        first = scorer.score(prefix, query, options)
        again = scorer.score(prefix, query, options)  # served from the fp16 cache: the same numbers
        assert not first.cache_hit and again.cache_hit and again.log_likelihoods == first.log_likelihoods
        cached[precision] = next(iter(scorer.cache._items.values()))
    assert {a.dtype for a in cached["int8"]} == {np.dtype(np.float16)}
    assert [a.shape for a in cached["int8"]] == [a.shape for a in cached["fp32"]]
    assert sum(a.nbytes for a in cached["int8"]) * 2 == sum(a.nbytes for a in cached["fp32"])


def test_cached_prefix_arrays_are_never_changed(encoder, bot, exported) -> None:
    scorer = onnx_scorer.OnnxCandidateScorer(exported["fp32"][0], num_threads=1, cache_size=2)
    prefix, query, options = _prompt(encoder, bot, ["weather", "music"], "下雪了")
    first = scorer.score(prefix, query, options)
    cached = [a.copy() for a in next(iter(scorer.cache._items.values()))]
    scorer.score(prefix, encoder.query_ids("放首歌"), options)
    third = scorer.score(prefix, query, options)
    assert third.cache_hit and third.log_likelihoods == first.log_likelihoods
    assert all(np.array_equal(a, b) for a, b in zip(cached, next(iter(scorer.cache._items.values()))))


def test_bad_arguments_and_files_are_refused(encoder, bot, exported, tmp_path: Path) -> None:
    scorer = onnx_scorer.OnnxCandidateScorer(exported["fp32"][0], num_threads=1)
    prefix, query, options = _prompt(encoder, bot, ["weather"], "下雪了")
    with pytest.raises(
        ValueError,
        match=re.escape(
            "mode must be one of cached, packed with the onnxruntime scorer (the others need `inference: {backend: torch}`), got 'naive'"
        ),
    ):
        scorer.score(prefix, query, options, mode="naive")
    with pytest.raises(ValueError, match="every answer needs at least one token"):
        scorer.score(prefix, query, [[]])
    with pytest.raises(ValueError, match="onnxruntime scores GPT-2 in fp32 or int8, not 'bf16'"):
        fewshot_export.export_scorer(None, tmp_path / "x.onnx", "bf16")


def test_other_architectures_are_refused_with_the_fix() -> None:
    from transformers import GPT2Config

    assert fewshot_export.export_problem(GPT2Config()) is None
    assert "scale_attn_by_inverse_layer_idx" in fewshot_export.export_problem(
        GPT2Config(scale_attn_by_inverse_layer_idx=True)
    )

    class Llama:
        model_type = "llama"

    assert fewshot_export.export_problem(Llama()) == "the model type is 'llama', not 'gpt2'"
