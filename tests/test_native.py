"""nlu_bert.native: nlu-bert's int8 BERT kernel against transformers' BertModel in fp32.

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

from nlu_bert import native, runtime  # noqa: E402
from nlu_bert.modeling import IntentModel  # noqa: E402

REASON = native.unavailable_reason()
needs_kernel = pytest.mark.skipif(REASON is not None, reason=f"native kernel unavailable: {REASON}")
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
    runtime.export_for_inference(model, folder, "native", "int8", save_dtype=dtype)
    return folder / native.NATIVE_FILE


def _torch_hidden(model: IntentModel, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.encoder(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()


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
    assert all(v.dtype != np.float16 for v in tensors.values())  # fp16 in the file, fp32 when read
    state = native.torch_state_dict(tensors, config)
    expected = model.state_dict()
    assert set(state) == set(expected)
    for name, value in state.items():
        ref = expected[name].numpy()
        assert value.shape == ref.shape, name
        assert np.abs(value - ref).max() <= np.abs(ref).max() / 100 + 1e-3, name


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
@pytest.mark.parametrize("hidden,heads", [(64, 4), (48, 4), (64, 1)], ids=["head16", "head12", "head64"])
@pytest.mark.parametrize("batch,seq", [(1, 1), (1, 16), (3, 17), (2, 40)])
def test_hidden_states_follow_fp32(hidden: int, heads: int, batch: int, seq: int, tmp_path: Path) -> None:
    model = _model(hidden=hidden, heads=heads)
    engine = native.NativeIntentModel(*native.read(_exported(model, tmp_path)), num_threads=2)
    ids, mask = _batch(batch, seq, seed=batch * 100 + seq)
    got = engine.encode(ids, mask)
    assert got.shape == (batch, seq, hidden) and got.dtype == np.float32
    assert _cosines(got, _torch_hidden(model, ids, mask), mask).min() > 0.998


@needs_kernel
def test_logits_and_top_intent_follow_fp32(tmp_path: Path) -> None:
    model = _model(ngrams=31, layers=3)
    _exported(model, tmp_path)
    predictor = runtime.load_predictor(tmp_path, "native", "int8", 2)
    assert isinstance(predictor, runtime.NativePredictor) and predictor.num_labels == LABELS
    agree = total = 0
    for seed in range(6):
        ids, mask = _batch(8, 24, seed=seed)
        ngrams = np.random.default_rng(seed).integers(0, 31, (8, 9)).astype(np.int64)
        with torch.no_grad():
            expected = model(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(ngrams)).numpy()
        got = predictor(ids, mask, ngrams)
        assert got.shape == expected.shape and got.dtype == np.float32
        assert np.abs(got - expected).max() <= 0.04 * np.abs(expected).max()
        agree += int((got.argmax(1) == expected.argmax(1)).sum())
        total += len(ids)
    assert agree >= total - 1, f"top intent differs on {total - agree} of {total}"


@needs_kernel
def test_a_message_gets_the_same_logits_alone_in_any_batch_and_with_any_threads(tmp_path: Path) -> None:
    """Activations are quantized per token row, so the other messages of a batch change nothing."""
    model = _model()
    path = _exported(model, tmp_path)
    ids, mask = _batch(5, 21, seed=7)
    one = native.NativeIntentModel(*native.read(path), num_threads=1)
    two = native.NativeIntentModel(*native.read(path), num_threads=2)
    together = two(ids, mask, None)
    np.testing.assert_array_equal(together, one(ids, mask, None))
    for row in range(len(ids)):
        width = int(mask[row].sum())
        alone = two(ids[row : row + 1, :width], mask[row : row + 1, :width], None)
        np.testing.assert_allclose(alone[0], together[row], rtol=0, atol=1e-5)


@needs_kernel
def test_bad_token_ids_and_lengths_are_clear_errors(tmp_path: Path) -> None:
    engine = native.NativeIntentModel(*native.read(_exported(_model(), tmp_path)), num_threads=1)
    ones = np.ones((1, 4), np.int64)
    with pytest.raises(ValueError, match=re.escape("token ids must lie in [0, 300)")):
        engine.encode(ones * VOCAB, ones)
    with pytest.raises(ValueError, match="more than this model's 64 positions"):
        engine.encode(np.ones((1, 65), np.int64), np.ones((1, 65), np.int64))


# ------------------------------------------------------------------------------------------ elsewhere
def test_machines_without_the_kernel_serve_the_file_with_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A CPU without AVX-512 VNNI (simulated: the check is the only thing replaced) gets torch, and a warning."""
    model = _model(ngrams=31)
    _exported(model, tmp_path)
    monkeypatch.setattr(native, "unavailable_reason", lambda: "this CPU lacks avx512_vnni")
    with caplog.at_level(logging.WARNING, logger="nlu_bert.runtime"):
        predictor = runtime.load_predictor(tmp_path, "native", "int8", 1)
    assert predictor.backend == "torch" and predictor.num_labels == LABELS
    assert "The native int8 kernel cannot run here (this CPU lacks avx512_vnni)" in caplog.text
    assert "Set `inference.backend` to 'onnxruntime'" in caplog.text
    ids, mask = _batch(6, 20, seed=3)
    ngrams = np.random.default_rng(3).integers(0, 31, (6, 9)).astype(np.int64)
    with torch.no_grad():
        expected = model(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(ngrams)).numpy()
    got = predictor(ids, mask, ngrams)
    assert np.abs(got - expected).max() <= 0.04 * np.abs(expected).max()
    assert (got.argmax(1) == expected.argmax(1)).all()


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
        runtime.load_predictor(tmp_path, "native", "int8", 1)
