"""Draw docs/layers.png: the layers of pyproject.toml's import-linter contracts, with the
imports that really cross between them (read from the code by grimp, import-linter's own
graph builder). Run it after a change of layers:

    python docs/layers.py            # needs Graphviz's `dot` (Debian: graphviz)
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
# Drawn beside the layers: what is not in the layers contract.
SIDE = ["pykvs.raft", "pykvs.acl", "pykvs.ui", "pykvs.httphead"]
UTILITIES = ["pykvs.goformat", "pykvs.netaddr", "pykvs.packed", "pykvs._pack", "pykvs._aio",
             "pykvs._slots"]


def _layers() -> list[list[str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for contract in config["tool"]["importlinter"]["contracts"]:
        if contract["type"] == "layers":
            return [[m.strip() for m in layer.split("|")] for layer in contract["layers"]]
    raise SystemExit("pyproject.toml has no layers contract")


def _owner(module: str, groups: list[str]) -> str | None:
    """The drawn group ``module`` belongs to (the longest matching prefix)."""
    best = None
    for group in groups:
        if (module == group or module.startswith(group + ".")) and (
                best is None or len(group) > len(best)):
            best = group
    return best


def dot_source() -> str:
    layers = _layers()
    groups = [m for layer in layers for m in layer] + SIDE + UTILITIES
    graph = grimp.build_graph("pykvs", include_external_packages=False)
    edges: set[tuple[str, str]] = set()
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            a, b = _owner(importer, groups), _owner(imported, groups)
            if a and b and a != b and b not in UTILITIES:
                edges.add((a, b))
    lines = ["digraph layers {", '  rankdir=TB; nodesep=0.3; ranksep=0.45;',
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11];',
             '  edge [color="#6b7b8c", arrowsize=0.6];']
    for rank, layer in enumerate(layers):
        names = " ".join(f'"{m}"' for m in layer)
        lines.append(f"  {{ rank=same; {names} }}")
        for module in layer:
            label = f"{module.removeprefix('pykvs.')}\\nlayer {rank + 1}"
            lines.append(f'  "{module}" [label="{label}", fillcolor="#dbe8f5"];')
    for module in SIDE:
        lines.append(f'  "{module}" [label="{module.removeprefix("pykvs.")}\\n(independent)", '
                     f'fillcolor="#f5ecd7"];')
    utilities = ", ".join(m.removeprefix("pykvs.") for m in UTILITIES)
    lines.append(f'  utilities [label="used by every layer:\\n{utilities}", shape=note, '
                 f'fillcolor="#eeeeee"];')
    lines.extend(f'  "{a}" -> "{b}";' for a, b in sorted(edges))
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> None:
    source = dot_source()
    out = ROOT / "docs" / "layers.png"
    subprocess.run(["dot", "-Tpng", "-Gdpi=110", "-o", str(out)], input=source.encode(),
                   check=True)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
