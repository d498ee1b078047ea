"""`benchmarks/bert_latency.py`'s table: each option's latency against the int8 FLOP floor and, where the run
measured it, against the larger of that floor and the floor of re-reading the int8 weights."""

from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional

from nlu_testing import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))

from benchmarks import _common as C  # noqa: E402
from benchmarks import bert_latency as B  # noqa: E402


def payload(p50_16: float, p50_32: float, int8_gflops: float, reread_gb_s: Optional[float]) -> Dict[str, Any]:
    latency = {str(n): {"p50": p, "p95": p} for n, p in zip(B.LENGTHS, (1.0, p50_16, p50_32, 9.0))}
    floors: Dict[str, Any] = {"best_gflops": {"int8": int8_gflops, "bf16": 100.0, "fp32": 50.0}, "dram_read_gb_s": 20.0}
    if reread_gb_s is not None:
        floors["int8_weights_reread_gb_s"] = reread_gb_s
    run = {
        "import_s": 0.0,
        "load_s": 0.5,
        "rss_after_load_mb": 200,
        "peak_rss_mb": 250,
        "latency_ms": latency,
        "batch_msgs_per_s": 100,
    }
    return {
        "machine": {"cpu": "test CPU", "cores_available": 2, "cpu_flags": ["avx512f"], "load_average_at_start": [0, 0, 0]},
        "args": {}, "load_average_at_end": [0, 0, 0], "runs": {"native-int8": [run]}, "floors_runs": [floors],
        "tokenizer": {"tokens_median": 10, "tokens_p95": 16, **{k: {"p50": 0.1, "p95": 0.2} for k in ("transformers_ms", "text_encoder_ms", "ngram_ids_ms")}},
        "files_mb": {}, "export": {}, "elapsed_s": 1.0,
    }  # fmt: skip


def row(table: str, name: str) -> List[str]:
    line = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_latency_is_set_against_the_larger_of_the_flop_and_reread_floors() -> None:
    gflops = C.flops_per_message(16) / 1e-3 / 1e9  # the FLOP floor: 1.0 ms at 16 tokens, about 2.0 at 32
    reread_gb_s = B.weight_bytes("int8") / 1.5e-3 / 1e9  # re-reading the weights: 1.5 ms
    floor32 = C.flops_per_message(32) / (gflops * 1e9) * 1e3
    table = B.render(payload(3.0, 2 * floor32, gflops, reread_gb_s))
    assert "× larger of the two int8 floors @16 / @32" in table
    # at 16 tokens the re-read (1.5 ms) is the larger floor, at 32 the FLOPs (2.0 ms)
    assert row(table, "native-int8")[-2:] == ["3.0 / 2.0", "2.0 / 2.0"]
    reread = row(
        table,
        "floor: re-reading the int8 weights' 85 MB back to back at "
        + f"{reread_gb_s:.0f} GB/s (from the last-level cache where it holds them)",
    )
    assert reread[4:8] == ["1.5"] * 4 and reread[-1] == ""


def test_runs_without_the_reread_floor_keep_the_flop_column_only() -> None:
    gflops = C.flops_per_message(16) / 1e-3 / 1e9
    table = B.render(payload(3.0, 4.0, gflops, None))
    assert "larger of the two" not in table and "re-reading" not in table
    assert row(table, "native-int8")[-1] == f"3.0 / {4.0 / (C.flops_per_message(32) / (gflops * 1e9) * 1e3):.1f}"
