"""The native int8 BERT kernel (nlu_bert/bert/native/bert_int8.c), built when pip installs nlu-bert.

Everything else about the package is in pyproject.toml. The extension is optional: without a C compiler
with OpenMP, or on a CPU architecture other than x86-64, the install goes on without it and the `native`
inference backend serves its file with onnxruntime (nlu_bert/bert/native/__init__.py says why at load time). The
library is loaded with ctypes only after the CPU's AVX-512 VNNI flags are checked (and its AMX path runs only
where the CPU has AMX and Linux grants it), so building it with those instructions is safe on any x86-64 machine.
"""

import platform
import sys
import tempfile
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

NATIVE = "nlu_bert.bert.native._bert_int8"
AMX_FLAGS = ["-mamx-tile", "-mamx-int8"]  # gcc >= 11, clang >= 12


class BuildExt(build_ext):
    """Adds the AMX flags to the native kernel where the compiler knows them (the kernel builds without them)."""

    def build_extensions(self) -> None:
        for ext in self.extensions:
            if ext.name == NATIVE and self._compiles(AMX_FLAGS):
                ext.extra_compile_args = ext.extra_compile_args + AMX_FLAGS
        super().build_extensions()

    def _compiles(self, flags: list) -> bool:
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "amx_check.c"
            source.write_text("#include <immintrin.h>\nvoid nb_check(void) { _tile_release(); }\n")
            try:
                self.compiler.compile([str(source)], output_dir=tmp, extra_postargs=flags)
            except Exception:  # noqa: BLE001 - any failure means: build without AMX
                return False
        return True


extensions = []
if sys.platform == "linux" and platform.machine().lower() in ("x86_64", "amd64"):
    extensions.append(
        Extension(
            NATIVE,
            sources=["nlu_bert/bert/native/bert_int8.c"],
            extra_compile_args=[
                "-O3",
                "-std=gnu11",
                "-fopenmp",
                "-mavx512f",
                "-mavx512bw",
                "-mavx512vl",
                "-mavx512dq",
                "-mavx512vnni",
                "-mfma",
            ],
            extra_link_args=["-fopenmp", "-lm"],
            optional=True,
        )
    )

setup(ext_modules=extensions, cmdclass={"build_ext": BuildExt})
