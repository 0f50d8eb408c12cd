"""`pip wheel .` builds the C extension through cffi; the wheel installs and imports elsewhere.

This is the contract a user relies on, so it runs in the default suite: it copies the tracked
source into a temporary directory, builds a wheel and an sdist there, installs the wheel into a
fresh virtual environment and exercises the compiled tree from outside the source tree.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tracked_sources(dest: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = ROOT / name.decode()
        if source.is_file():
            target = dest / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to list the sources")
def test_wheel_builds_installs_and_imports_in_a_fresh_venv(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tracked_sources(src)
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
        check=True,
    )
    wheels = list(dist.glob("pykvs-*.whl"))
    assert len(wheels) == 1, wheels

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheels[0])], check=True)
    probe = (
        "import pykvs, pykvs.radix as r\n"
        "assert 'site-packages' in pykvs.__file__, pykvs.__file__\n"
        "t = r.Tree(); x = t.txn(); x.insert(b'k', b'v', 7); t2, fired = x.commit()\n"
        "assert t2.get(b'k') == b'v' and len(t2) == 1 and t2.max_index() == 7\n"
        "import pykvs.ui\n"
        "assert (pykvs.ui.STATIC_DIR / 'app.js').is_file(), 'the UI files are not in the wheel'\n"
        "import pkgutil\n"
        "walk = pkgutil.walk_packages(pykvs.__path__, 'pykvs.')\n"
        "found = sorted(m.name for m in walk if m.ispkg)\n"
        "print(' '.join(found))\n"
    )
    out = subprocess.run(
        [str(python), "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    # Every package of the source tree made it into the wheel.
    expected = sorted(
        "pykvs." + ".".join(p.parent.relative_to(src / "pykvs").parts)
        for p in (src / "pykvs").rglob("*/__init__.py")  # subpackages at any depth
    )
    assert out.stdout.split() == expected


def test_sdist_carries_the_c_sources(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tracked_sources(src)
    build = pytest.importorskip("build", reason="the sdist check needs the 'build' package")
    del build
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "-o", str(tmp_path / "dist"), str(src)],
        check=True,
        capture_output=True,
    )
    (sdist,) = (tmp_path / "dist").glob("pykvs-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {Path(n).relative_to(Path(n).parts[0]).as_posix() for n in archive.getnames()[1:]}
    for needed in ("csrc/radix.c", "csrc/radix.h", "csrc/radix.cdef", "csrc/transcode.c",
                   "csrc/build_ffi.py", "setup.py", "pyproject.toml"):
        assert needed in names
