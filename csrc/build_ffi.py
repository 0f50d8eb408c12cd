"""cffi build script: compiles csrc/*.c into the extension module ``pykvs._cradix``.

Each C unit keeps its Python-visible declarations in a ``.cdef`` file beside its header
(plain C declarations, no preprocessor), so the tree and the transcoder stay separate units. A unit
that only other units call (pickle_writer, under the tree's listings) has a .cdef with nothing to
declare.
"""

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
UNITS = ["radix", "pickle_writer", "transcode", "httphead"]

ffibuilder = FFI()
for unit in UNITS:
    ffibuilder.cdef((HERE / f"{unit}.cdef").read_text())

ffibuilder.set_source(
    "pykvs._cradix",
    "\n".join(f'#include "{unit}.h"' for unit in UNITS),
    # Relative paths: setuptools wants sources relative to setup.py.
    sources=[f"csrc/{unit}.c" for unit in UNITS],
    include_dirs=["csrc"],
    extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
