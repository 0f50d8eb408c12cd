"""The house rules of docs/ARCHITECTURE.md, checked so that the next change keeps them:
files of one concern (at most 600 lines; the Raft core may stay one piece, as etcd's
raft.go), functions that fit on a screen (at most 80 lines), in Python and in C. The layer
contracts are checked by ``lint-imports`` (pyproject.toml), run by the same test command."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80
ONE_PIECE = {"pykvs/raft/core.py"}  # the protocol in one file, as etcd-io/raft's raft.go


def _python_files() -> list[Path]:
    return sorted((ROOT / "pykvs").rglob("*.py"))


def test_every_module_is_at_most_600_lines() -> None:
    too_long = []
    for path in _python_files():
        name = path.relative_to(ROOT).as_posix()
        lines = len(path.read_text().splitlines())
        if lines > MAX_FILE_LINES and name not in ONE_PIECE:
            too_long.append(f"{name}: {lines} lines")
    assert not too_long, "split by concern: " + ", ".join(too_long)


def _long_python_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length})")
    return found


def test_every_python_function_is_at_most_80_lines() -> None:
    """In the package and the benchmarks (tests may tell a long story in one function)."""
    paths = [*_python_files(), *sorted((ROOT / "bench").rglob("*.py")),
             *sorted((ROOT / "docs").glob("*.py"))]
    found = [f for path in paths for f in _long_python_functions(path)]
    assert not found, "name the steps: " + ", ".join(found)


_C_NOISE = re.compile(
    r"/\*.*?\*/"  # block comments
    r"|//[^\n]*"  # line comments
    r'|"(?:\\.|[^"\\\n])*"'  # string literals
    r"|'(?:\\.|[^'\\\n])*'"  # character literals
    r"|^[ \t]*#[^\n]*",  # preprocessor lines
    re.S | re.M)


def _c_functions(text: str) -> list[tuple[str, int, int]]:
    """``(name, first line, length)`` of each top-level function definition in ``text``:
    a brace block at file level whose head has a parameter list and is not an initializer
    or a struct, enum or union."""
    # Comments, literals and preprocessor lines become spaces (line breaks kept).
    code = _C_NOISE.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), text)
    functions = []
    depth, head, head_line, line = 0, "", 0, 1
    name, start = "", 0
    for char in code:
        if char == "\n":
            line += 1
        if depth == 0 and char not in "{};":
            if not head.strip() and not char.isspace():
                head_line = line
            head += char
        elif char == "{":
            if depth == 0:
                words = head.split("(")[0].split()
                is_function = ("(" in head and "=" not in head and words
                               and words[0] not in ("struct", "enum", "union", "typedef"))
                name, start = (words[-1].lstrip("*"), head_line) if is_function else ("", 0)
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                if name:
                    functions.append((name, start, line - start + 1))
                name, head = "", ""
        elif char == ";" and depth == 0:
            head = ""
    return functions


def test_every_c_function_is_at_most_80_lines() -> None:
    found = []
    for path in sorted((ROOT / "csrc").glob("*.c")):
        for name, start, length in _c_functions(path.read_text()):
            if length > MAX_FUNCTION_LINES:
                found.append(f"{path.relative_to(ROOT)}:{start} {name} ({length})")
    assert not found, "name the steps: " + ", ".join(found)


def test_the_c_function_finder_sees_functions() -> None:
    """The checker above must not pass by finding nothing."""
    text = "static int\nadd(int a,\n    int b)\n{\n    return a + b;\n}\n" \
           "struct s {\n    int x;\n};\nint main(void) {\n    return add(1, 2);\n}\n"
    assert _c_functions(text) == [("add", 1, 6), ("main", 10, 3)]
    assert len(_c_functions((ROOT / "csrc" / "radix.c").read_text())) > 20
