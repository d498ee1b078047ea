"""nlu_bert.bert.native: nlu-bert's int8 BERT kernel against transformers' BertModel in fp32.

The models are small random BERTs built here (a few layers, hidden 48-64, head widths that are and are not
multiples of 16). What the kernel must keep: the encoder's hidden states (cosine with fp32), the top intent, a
message's logits independent of its batch and of the thread count, and clear errors for what it cannot run.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nlu_bert import archive  # noqa: E402
from nlu_bert.bert import export as bert_export  # noqa: E402
from nlu_bert.bert import (
    native,  # noqa: E402
    predictors,  # noqa: E402
)
from nlu_bert.bert.model import IntentModel  # noqa: E402

REASON = native.unavailable_reason()
needs_kernel = pytest.mark.skipif(REASON is not None, reason=f"native kernel unavailable: {REASON}")
AMX_REASON = REASON or native.amx_unavailable_reason({"hidden_size": 64, "intermediate_size": 256})
needs_amx = pytest.mark.skipif(AMX_REASON is not None, reason=f"the kernel's AMX path is unavailable: {AMX_REASON}")
# the kernel's two paths; AMX runs where the CPU has it (Intel Sapphire Rapids and newer)
C_PATHS = [pytest.param(False, id="vnni"), pytest.param(True, id="amx", marks=needs_amx)]
VOCAB = 300
LABELS = 7


def _model(hidden: int = 64, heads: int = 4, layers: int = 2, ngrams: int = 0, seed: int = 0) -> IntentModel:
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=hidden * 4, max_position_embeddings=64, initializer_range=0.2,  # every op matters
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    model = IntentModel(BertModel(config, add_pooling_layer=False), LABELS, ngram_buckets=ngrams, ngram_dim=16)
    with torch.no_grad():  # a head with real margins: random init gives near-equal logits
        model.classifier.weight.mul_(40.0)
    return model.eval()


def _batch(batch: int, seq: int, seed: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, VOCAB, (batch, seq)).astype(np.int64)
    mask = np.ones_like(ids)
    for row, n in enumerate(rng.integers(1, seq + 1, batch)):
        if row:  # the first row stays full length
            mask[row, n:] = 0
            ids[row, n:] = 0
    return ids, mask


def _exported(model: IntentModel, folder: Path, dtype: str = "float32") -> Path:
    bert_export.export_for_inference(model, folder, "native", "int8", save_dtype=dtype)
    return folder / archive.NATIVE_FILE


def _torch_hidden(model: IntentModel, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.encoder(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)
        ).last_hidden_state.numpy()


def _cosines(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> np.ndarray:
    keep = mask.astype(bool)
    x, y = a[keep], b[keep]
    return (x * y).sum(-1) / np.linalg.norm(x, axis=-1) / np.linalg.norm(y, axis=-1)


# ------------------------------------------------------------------------------------------ weights
def test_quantized_panels_round_trip_within_half_a_step() -> None:
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(48, 32)).astype(np.float32)
    weight[5] = 0.0  # an all-zero output channel keeps a usable scale
    panels, scale = native.quantize_linear(weight)
    assert panels.shape == (3, 8, 16, 4) and panels.dtype == np.int8 and scale.shape == (48,)
    back = native.dequantize_linear(panels, scale)
    assert np.all(np.abs(back - weight) <= scale[:, None] / 2 + 1e-7)
    assert np.abs(panels).max() == 127 and np.all(back[5] == 0)
    # panel p, group g, lane c, byte b holds weight[16 p + c, 4 g + b]
    q = np.rint(weight / scale[:, None]).astype(np.int8)
    assert panels[1, 2, 3, 1] == q[16 + 3, 4 * 2 + 1]


def test_export_writes_int8_panels_and_reads_back(tmp_path: Path) -> None:
    model = _model(ngrams=31)
    path = _exported(model, tmp_path, dtype="float16")
    tensors, config = native.read(path)
    assert config["hidden_size"] == 64 and config["num_hidden_layers"] == 2
    assert tensors["layer.0.qkv.panels"].dtype == np.int8 and tensors["layer.0.qkv.panels"].shape == (12, 16, 16, 4)
    assert tensors["layer.1.ffn_out.panels"].shape == (4, 64, 16, 4)  # 256 -> 64
    # fp16 in the file; fp32 when read, but for the lookup tables, of which a forward pass converts a few rows
    assert {k for k, v in tensors.items() if v.dtype == np.float16} == set(native.LOOKUP_TABLES) & set(tensors)
    expected = {k: v.numpy() for k, v in model.state_dict().items()}
    qkv = np.concatenate(
        [expected[f"encoder.encoder.layer.1.attention.self.{p}.weight"] for p in ("query", "key", "value")]
    )
    back = native.dequantize_linear(tensors["layer.1.qkv.panels"], tensors["layer.1.qkv.scale"])
    assert np.abs(back - qkv).max() <= np.abs(qkv).max() / 254 + 1e-6  # half a step of the widest channel
    assert np.array_equal(tensors["layer.1.ln2.weight"], expected["encoder.encoder.layer.1.output.LayerNorm.weight"])
    for name in ("embeddings.word_embeddings.weight", "ngrams.weight", "classifier.weight"):
        ref = expected[name if name.startswith(("ngrams", "classifier")) else f"encoder.{name}"]
        assert np.abs(tensors[name] - ref).max() <= np.abs(ref).max() / 1000, name  # fp16 rounding only


def test_bad_encoders_and_files_are_clear_errors(tmp_path: Path) -> None:
    model = _model()
    config = model.encoder.config.to_dict()
    for change, message in [
        ({"model_type": "roberta"}, "BERT encoders only, not model_type 'roberta'"),
        ({"hidden_act": "relu"}, "GELU (erf) only, not hidden_act 'relu'"),
        ({"intermediate_size": 250}, "must be multiples of 16"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            native.export(model.state_dict(), {**config, **change}, tmp_path / "x.safetensors")
    from safetensors.numpy import save_file

    save_file({"a": np.zeros(2, np.float32)}, str(tmp_path / "old.safetensors"), metadata={"format": "0"})
    with pytest.raises(ValueError, match="has format '0'; this nlu-bert reads format 1"):
        native.read(tmp_path / "old.safetensors")


# ------------------------------------------------------------------------------------------ the kernel
@needs_kernel
@pytest.mark.parametrize("amx", C_PATHS)
@pytest.mark.parametrize(
    "hidden,heads", [(64, 4), (48, 4), (64, 1), (128, 2)], ids=["head16", "head12", "head64", "hidden128"]
)
@pytest.mark.parametrize("batch,seq", [(1, 1), (1, 16), (3, 17), (2, 40)])
def test_hidden_states_follow_fp32(amx: bool, hidden: int, heads: int, batch: int, seq: int, tmp_path: Path) -> None:
    """batch x seq covers the AMX path's one partial tile, one full tile, 2 x 2 tiles with a partial second, and
    2 x 2 tiles plus a last single one (80 token rows)."""
    if amx and hidden % native.AMX_BLOCK:
        pytest.skip("the AMX path runs multiples of 64 only (test_the_c_kernel_is_chosen_where_it_runs)")
    model = _model(hidden=hidden, heads=heads)
    engine = native.NativeIntentModel(*native.read(_exported(model, tmp_path)), num_threads=2, amx=amx)
    assert engine.kernel == ("amx" if amx else "vnni")
    ids, mask = _batch(batch, seq, seed=batch * 100 + seq)
    got = engine.encode(ids, mask)
    assert got.shape == (batch, seq, hidden) and got.dtype == np.float32
    assert _cosines(got, _torch_hidden(model, ids, mask), mask).min() > 0.998


@needs_kernel
def test_logits_and_top_intent_follow_fp32(tmp_path: Path) -> None:
    model = _model(ngrams=31, layers=3)
    _exported(model, tmp_path)
    predictor = predictors.load_predictor(tmp_path, "native", "int8", 2)
    assert isinstance(predictor, predictors.NativePredictor) and predictor.num_labels == LABELS
    _assert_logits_follow_fp32(predictor, model, seeds=range(6), batch=8, seq=24, tolerance=0.04)


@needs_kernel
@pytest.mark.parametrize("amx", C_PATHS)
def test_a_message_gets_the_same_logits_alone_in_any_batch_and_with_any_threads(amx: bool, tmp_path: Path) -> None:
    """Activations are quantized per token row, so the other messages of a batch change nothing."""
    model = _model()
    path = _exported(model, tmp_path)
    ids, mask = _batch(5, 21, seed=7)
    one = native.NativeIntentModel(*native.read(path), num_threads=1, amx=amx)
    two = native.NativeIntentModel(*native.read(path), num_threads=2, amx=amx)
    together = two(ids, mask, None)
    np.testing.assert_array_equal(together, one(ids, mask, None))
    for row in range(len(ids)):
        width = int(mask[row].sum())
        alone = two(ids[row : row + 1, :width], mask[row : row + 1, :width], None)
        np.testing.assert_allclose(alone[0], together[row], rtol=0, atol=1e-5)


@needs_amx
def test_amx_and_vnni_paths_give_the_same_logits_bit_for_bit(tmp_path: Path) -> None:
    """The same int32 sums (exact on both paths) and the same epilogue."""
    tensors, config = native.read(_exported(_model(hidden=128, heads=2, ngrams=31, layers=3), tmp_path))
    vnni = native.NativeIntentModel(tensors, config, num_threads=2, amx=False)
    amx = native.NativeIntentModel(tensors, config, num_threads=2, amx=True)
    for batch, seq in ((1, 9), (1, 16), (2, 33), (4, 40)):
        ids, mask = _batch(batch, seq, seed=seq)
        ngrams = np.random.default_rng(seq).integers(0, 31, (batch, 5)).astype(np.int64)
        np.testing.assert_array_equal(amx(ids, mask, ngrams), vnni(ids, mask, ngrams))


@needs_kernel
def test_fp16_lookup_tables_give_the_logits_of_tables_converted_up_front(tmp_path: Path) -> None:
    """read() keeps the word embeddings and n-gram table in fp16 (half the memory); converting the rows a
    message looks up gives the same logits, bit for bit, as converting the whole tables when read."""
    tensors, config = native.read(_exported(_model(ngrams=31), tmp_path, dtype="float16"))
    assert tensors["embeddings.word_embeddings.weight"].dtype == np.float16
    converted = {k: v.astype(np.float32) if k in native.LOOKUP_TABLES else v for k, v in tensors.items()}
    kept = native.NativeIntentModel(tensors, config, num_threads=2)
    up_front = native.NativeIntentModel(converted, config, num_threads=2)
    ids, mask = _batch(4, 19, seed=11)
    ngrams = np.random.default_rng(11).integers(0, 31, (4, 6)).astype(np.int64)
    logits = kept(ids, mask, ngrams)
    assert logits.dtype == np.float32
    np.testing.assert_array_equal(logits, up_front(ids, mask, ngrams))
    np.testing.assert_array_equal(kept.encode(ids, mask), up_front.encode(ids, mask))


def test_amx_groups_put_the_four_panels_of_each_step_side_by_side() -> None:
    panels, _ = native.quantize_linear(np.random.default_rng(3).normal(size=(128, 192)).astype(np.float32))
    groups = native.amx_groups(panels)  # [N/64, K/64, 4, 16, 64]
    assert groups.shape == (2, 3, 4, 16, 64) and groups.flags["C_CONTIGUOUS"]
    # group g, step j, panel q, tile row r holds panel 4 g + q's row 16 j + r (4 k values of 16 columns)
    for g, j, q, r in ((0, 0, 0, 0), (1, 2, 3, 15), (0, 1, 2, 7), (1, 0, 1, 9)):
        assert np.array_equal(groups[g, j, q, r], panels[4 * g + q, 16 * j + r].reshape(64))
    if REASON is None:  # the AMX path refuses what it cannot run, before any tile instruction
        with pytest.raises(RuntimeError, match="the native kernel's AMX path cannot run this model here: "):
            native.NativeIntentModel(*_tiny_tensors(hidden=48), num_threads=1, amx=True)


def _tiny_tensors(hidden: int) -> Tuple[dict, dict]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return native.read(_exported(_model(hidden=hidden, heads=4, layers=1), Path(tmp)))


@needs_kernel
def test_bad_token_ids_and_lengths_are_clear_errors(tmp_path: Path) -> None:
    engine = native.NativeIntentModel(*native.read(_exported(_model(), tmp_path)), num_threads=1)
    ones = np.ones((1, 4), np.int64)
    with pytest.raises(ValueError, match=re.escape("token ids must lie in [0, 300)")):
        engine.encode(ones * VOCAB, ones)
    with pytest.raises(ValueError, match="more than this model's 64 positions"):
        engine.encode(np.ones((1, 65), np.int64), np.ones((1, 65), np.int64))


def _assert_logits_follow_fp32(predictor, model: IntentModel, seeds, batch: int, seq: int, tolerance: float) -> None:
    """The predictor's logits within ``tolerance`` × the largest fp32 logit of the torch model's, with n-gram
    features, and the same top intent on all but at most one message."""
    agree = total = 0
    for seed in seeds:
        ids, mask = _batch(batch, seq, seed=seed)
        ngrams = np.random.default_rng(seed).integers(0, 31, (batch, 9)).astype(np.int64)
        with torch.no_grad():
            expected = model(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(ngrams)).numpy()
        got = predictor(ids, mask, ngrams)
        assert got.shape == expected.shape and got.dtype == np.float32
        assert np.abs(got - expected).max() <= tolerance * np.abs(expected).max()
        agree += int((got.argmax(1) == expected.argmax(1)).sum())
        total += len(ids)
    assert agree >= total - 1, f"top intent differs on {total - agree} of {total}"


def test_machines_without_the_kernel_serve_the_file_with_onnxruntime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A CPU without AVX-512 VNNI (simulated: the check is the only thing replaced) gets the same int8 weights
    as an onnxruntime graph, and the log says why."""
    model = _model(ngrams=31, layers=3)
    _exported(model, tmp_path)
    monkeypatch.setattr(native, "unavailable_reason", lambda: "this CPU lacks avx512_vnni")
    with caplog.at_level(logging.INFO, logger="nlu_bert.bert.predictors"):
        predictor = predictors.load_predictor(tmp_path, "native", "int8", 1)
    assert predictor.backend == "native" and predictor.kernel == "onnxruntime" and predictor.num_labels == LABELS
    assert "kernel='onnxruntime'" in repr(predictor)
    assert (
        "The native int8 kernel cannot run here (this CPU lacks avx512_vnni); serving model.native.safetensors with onnxruntime"
        in caplog.text
    )
    _assert_logits_follow_fp32(predictor, model, seeds=range(4), batch=6, seq=20, tolerance=0.08)


@pytest.mark.parametrize("hidden,heads", [(64, 4), (48, 4)], ids=["head16", "head12"])
def test_onnxruntime_graph_hidden_states_follow_fp32_with_signed_and_unsigned_weights(
    hidden: int, heads: int, tmp_path: Path
) -> None:
    """u8 weights with a zero point of 128 (CPUs without VNNI, where u8 x s8 saturates) compute the same
    products as s8 weights: both follow fp32, and each other to float rounding."""
    model = _model(hidden=hidden, heads=heads)
    tensors, config = native.read(_exported(model, tmp_path))
    ids, mask = _batch(3, 17, seed=5)
    expected = _torch_hidden(model, ids, mask)
    signed = native.OnnxIntentModel(tensors, config, 1, signed_weights=True).encode(ids, mask)
    unsigned = native.OnnxIntentModel(tensors, config, 1, signed_weights=False).encode(ids, mask)
    assert _cosines(signed, expected, mask).min() > 0.995
    assert _cosines(unsigned, expected, mask).min() > 0.995
    np.testing.assert_allclose(unsigned, signed, rtol=0, atol=1e-4)


def test_unsigned_weights_are_chosen_where_the_cpu_lacks_vnni() -> None:
    from nlu_bert.bert.native import portable

    assert not portable.signed_weights_fast(["avx2", "avx512f", "avx512bw"])
    assert portable.signed_weights_fast(["avx2", "avx_vnni"]) and portable.signed_weights_fast(["avx512_vnni"])
    panels, _ = native.quantize_linear(np.random.default_rng(0).normal(size=(32, 8)).astype(np.float32))
    matrix = portable.int8_matrix(panels)  # [in, out]: weight[out, in] transposed
    assert matrix.shape == (8, 32) and np.array_equal(
        matrix.T, native.dequantize_linear(panels, np.ones(32, np.float32))
    )


def test_the_kernel_choice_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _exported(_model(), tmp_path)
    monkeypatch.setenv(native.KERNEL_ENV, "onnxruntime")
    assert native.unavailable_reason() == "NLU_BERT_NATIVE_KERNEL=onnxruntime turns it off"
    assert predictors.load_predictor(tmp_path, "native", "int8", 1).kernel == "onnxruntime"
    monkeypatch.setenv(native.KERNEL_ENV, "gpu")
    with pytest.raises(
        ValueError,
        match=re.escape("NLU_BERT_NATIVE_KERNEL must be one of 'auto', 'amx', 'vnni', 'onnxruntime', got 'gpu'."),
    ):
        native.unavailable_reason()
    monkeypatch.setattr(native, "cpu_flags", lambda: ["avx2"])
    if native.sys.platform == "linux" and native.platform.machine() == "x86_64":
        monkeypatch.setenv(native.KERNEL_ENV, "vnni")
        with pytest.raises(
            RuntimeError,
            match=re.escape("NLU_BERT_NATIVE_KERNEL=vnni, but the native int8 kernel cannot run here: this CPU lacks"),
        ):
            predictors.load_predictor(tmp_path, "native", "int8", 1)
        monkeypatch.setenv(native.KERNEL_ENV, "amx")
        with pytest.raises(
            RuntimeError,
            match=re.escape(
                "NLU_BERT_NATIVE_KERNEL=amx, but the native kernel's AMX path cannot run here: this CPU lacks"
            ),
        ):
            predictors.load_predictor(tmp_path, "native", "int8", 1)
        monkeypatch.setenv(native.KERNEL_ENV, "auto")
        predictor = predictors.load_predictor(tmp_path, "native", "int8", 1)
        assert (
            predictor.kernel == "onnxruntime"
            and predictor.model.kernel_note == "this CPU lacks avx512f, avx512bw, avx512vl, avx512_vnni"
        )


@needs_kernel
def test_the_c_kernel_is_chosen_where_it_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _exported(_model(), tmp_path)
    fastest = "amx" if AMX_REASON is None else "vnni"
    predictor = predictors.load_predictor(tmp_path, "native", "int8", 1)
    assert predictor.kernel == fastest and isinstance(predictor.model, native.NativeIntentModel)
    monkeypatch.setenv(native.KERNEL_ENV, "vnni")
    assert predictors.load_predictor(tmp_path, "native", "int8", 1).kernel == "vnni"
    monkeypatch.delenv(native.KERNEL_ENV)
    shape_48 = tmp_path / "hidden48"
    _exported(_model(hidden=48, heads=4), shape_48)
    assert predictors.load_predictor(shape_48, "native", "int8", 1).kernel == "vnni"  # no AMX path for 48


@pytest.mark.skipif(native.library_path() is None or REASON is not None, reason="needs the compiled kernel")
def test_amx_unavailable_reason_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"hidden_size": 64, "intermediate_size": 256}
    monkeypatch.setattr(native, "cpu_flags", lambda: list(native.CPU_FLAGS))
    assert native.amx_unavailable_reason(base) == "this CPU lacks amx_tile, amx_int8"
    monkeypatch.setattr(native, "cpu_flags", lambda: list(native.CPU_FLAGS + native.AMX_CPU_FLAGS))
    assert native.amx_unavailable_reason({"hidden_size": 48, "intermediate_size": 192}) == (
        "hidden_size (48) and intermediate_size (192) are not multiples of 64"
    )


def test_unavailable_reason_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "cpu_flags", lambda: ["avx2", "avx512f"])
    reason = native.unavailable_reason()
    if native.sys.platform == "linux" and native.platform.machine() == "x86_64":
        assert reason == "this CPU lacks avx512bw, avx512vl, avx512_vnni"
    monkeypatch.setattr(native, "cpu_flags", lambda: list(native.CPU_FLAGS))
    monkeypatch.setattr(native, "library_path", lambda: None)
    if native.sys.platform == "linux" and native.platform.machine() == "x86_64":
        assert "its compiled library is missing" in (native.unavailable_reason() or "")


def test_missing_native_file_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape("not exported for `inference.backend` 'native'")):
        predictors.load_predictor(tmp_path, "native", "int8", 1)
