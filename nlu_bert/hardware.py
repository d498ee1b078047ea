"""What this machine offers a model: CPU flags, the cores this process may run on, native bf16, and
handing freed heap pages back to the system. Imports nothing of nlu-bert."""

from __future__ import annotations

import os
from typing import List


def cpu_flags() -> List[str]:
    """The CPU flags of /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return line.split(":", 1)[1].split()
    except OSError:
        pass
    return []


def cpu_has_native_bf16() -> bool:
    """True on CPUs that compute bf16 natively (AVX-512 BF16 or AMX)."""
    return bool(set(cpu_flags()) & {"avx512_bf16", "amx_bf16"})


def available_cores() -> int:
    """Cores this process may run on (respects taskset / cgroup affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def resolve_threads(num_threads: int) -> int:
    """``num_threads``; for 0: ``OMP_NUM_THREADS`` where it is set (several serving processes share the cores:
    each computes on its own share, docs/deploy.md), else every available core."""
    if num_threads and num_threads > 0:
        return int(num_threads)
    try:
        omp = int(os.environ.get("OMP_NUM_THREADS", "0"))
    except ValueError:
        omp = 0
    return min(omp, available_cores()) if omp > 0 else available_cores()


def return_freed_memory() -> bool:
    """Hand the heap pages freed while a model loaded back to the system (glibc's ``malloc_trim``). Loading reads
    and converts tensors, and with its default settings glibc keeps most of what was freed in the process: 53-67 MB
    after the GPT-2 scorer's session is built. True where it ran (Linux with glibc), else False."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # another C library (musl): no malloc_trim
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True
