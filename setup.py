"""Build hook: the C radix tree and the entry transcoder, compiled by cffi (API mode)."""

from setuptools import setup

setup(cffi_modules=["csrc/build_ffi.py:ffibuilder"])
