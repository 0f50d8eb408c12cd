import pykvs
from pykvs import _cradix


def test_package_imports_with_compiled_extension() -> None:
    assert pykvs.__version__
    assert _cradix.ffi is not None
