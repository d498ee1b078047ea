"""The native int8 BERT kernel (nlu_bert/native/bert_int8.c), built when pip installs nlu-bert.

Everything else about the package is in pyproject.toml. The extension is optional: without a C compiler
with OpenMP, or on a CPU architecture other than x86-64, the install goes on without it and the `native`
inference backend falls back to torch (nlu_bert/native/__init__.py says why at load time). The library is
loaded with ctypes only after the CPU's AVX-512 VNNI flags are checked, so building it with those
instructions is safe on any x86-64 machine.
"""
import platform
import sys

from setuptools import Extension, setup

extensions = []
if sys.platform == "linux" and platform.machine().lower() in ("x86_64", "amd64"):
    extensions.append(
        Extension(
            "nlu_bert.native._bert_int8",
            sources=["nlu_bert/native/bert_int8.c"],
            extra_compile_args=[
                "-O3", "-std=gnu11", "-fopenmp", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq",
                "-mavx512vnni", "-mfma",
            ],  # fmt: skip
            extra_link_args=["-fopenmp", "-lm"],
            optional=True,
        )
    )

setup(ext_modules=extensions)
