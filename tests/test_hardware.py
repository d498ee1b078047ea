"""What the machine offers: threads, CPU flags, freed memory handed back."""

from __future__ import annotations

import sys

import pytest

from nlu_bert import hardware


def test_threads_default_to_every_core_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert hardware.resolve_threads(0) == hardware.available_cores() >= 1
    assert hardware.resolve_threads(3) == 3
    assert all(isinstance(flag, str) for flag in hardware.cpu_flags())


def test_omp_num_threads_sets_the_default_for_processes_that_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert hardware.resolve_threads(0) == 1
    assert hardware.resolve_threads(2) == 2  # an explicit `threads` wins
    monkeypatch.setenv("OMP_NUM_THREADS", "999")
    assert hardware.resolve_threads(0) == hardware.available_cores()
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    assert hardware.resolve_threads(0) == hardware.available_cores()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")
def test_freed_heap_memory_is_returned_to_the_system():
    """Blocks freed below a block still in use stay in the process until return_freed_memory()."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    def rss_mb() -> float:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

    blocks = [libc.malloc(4000) for _ in range(40_000)]  # 160 MB in small heap blocks (under mmap's threshold)
    for block in blocks:
        ctypes.memset(block, 1, 4000)
    keep = libc.malloc(4000)  # the heap's top stays in use, so glibc cannot shrink it on free()
    for block in blocks:
        libc.free(block)
    held = rss_mb()
    assert hardware.return_freed_memory() is True
    assert rss_mb() < held - 100
    libc.free(keep)
