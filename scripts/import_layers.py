"""Import circles and upward imports among seqbench's modules (issue 20's measures).

Why a script and not a linter rule: the imports that made circles here were inside
functions (a plugin loader importing the half-imported config, a benchmark importing the
CLI that dispatches to it), which import linters skip. So every import counts, at module
level or in a function body; only `if TYPE_CHECKING:` blocks are left out (they never
run). An import of a package's submodule counts as an import of that submodule; the
root package `seqbench` (only `__version__` is read from it) is left out.

    python scripts/import_layers.py            # the layer table, circles, upward imports
    python scripts/import_layers.py --check    # exit 1 when there is any of either

Layers, low to high. A module may import its own layer and the ones below. `config`
sits above data/models/clipping because validation builds tasks and models on the meta
device and stores the registries' schemas with Hydra; `tools` are the programs the CLI
dispatches to (the Hydra app, the benchmarks, the Hydra sweeper plugin).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("seqbench", "hydra_plugins/seqbench_sweeper")

# (layer, module prefixes); the first layer whose prefix matches a module is its layer
LAYERS = [
    ("contract", ["seqbench.rundir", "seqbench.errors", "seqbench.checks", "seqbench.registry",
                  "seqbench.outcome"]),
    ("data/models/clipping", ["seqbench.data", "seqbench.models", "seqbench.clipping",
                              "seqbench.optim", "seqbench.precision", "seqbench.sizes",
                              "seqbench.tblog"]),
    ("config", ["seqbench.config", "seqbench.confdir", "seqbench.plugin_loader",
                "seqbench.plugins", "seqbench.fork", "seqbench.spike"]),
    ("train", ["seqbench.train", "seqbench.checkpoint", "seqbench.metrics", "seqbench.writer",
               "seqbench.process", "seqbench.progress", "seqbench.summary", "seqbench.clipper",
               "seqbench.smoothness", "seqbench.early_warning"]),
    ("sweep", ["seqbench.sweep", "seqbench.jobconfigs", "seqbench.hydra_input",
               "seqbench.bundles"]),
    ("report", ["seqbench.report", "seqbench.fake_runs"]),
    ("tools", ["seqbench.app", "seqbench.bench", "hydra_plugins"]),
    ("cli", ["seqbench.cli", "seqbench.__main__", "seqbench.__init__"]),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1 and parts[:-1] != ["seqbench"]:
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> int | None:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return None


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            out[module_name(path)] = path
    return out


def imports(path: Path, known: set[str]) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import of a known module."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" \
        else module_name(path)
    found: list[tuple[str, int, bool]] = []

    def resolve(name: str) -> str | None:
        while name and name not in known:  # `from a.b import c`: c or a.b or a
            name = name.rpartition(".")[0]
        return name or None

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.orelse:
                    visit(sub, top)
                continue
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                names = [f"{base}.{a.name}" for a in child.names] or [base]
            for name in names:
                target = resolve(name)
                if target is not None and target != "seqbench":
                    found.append((target, child.lineno, top))
            inner = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, top and not inner)

    visit(tree, True)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            strong(v)
    return sorted(out)


def main(argv: list[str] | None = None) -> int:
    global ROOT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 on any problem")
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="the checkout to measure (default: this one)")
    args = parser.parse_args(argv)
    ROOT = args.root.resolve()
    mods = modules()
    known = set(mods)
    edges = {m: imports(p, known) for m, p in mods.items()}
    unplaced = [m for m in mods if layer_of(m) is None]
    for label, top_only in (("all imports", False), ("module-level imports", True)):
        graph = {m: {t for t, _, top in e if t != m and (top or not top_only)}
                 for m, e in edges.items()}
        found = cycles(graph)
        print(f"circles ({label}): {len(found)}")
        for comp in found:
            print("  " + " <-> ".join(comp))
    upward = sorted({(m, t, line) for m, e in edges.items() for t, line, _ in e
                     if layer_of(m) is not None and layer_of(t) is not None
                     and layer_of(t) > layer_of(m)})
    pairs = sorted({(m, t) for m, t, _ in upward})
    print(f"upward imports: {len(pairs)} (module pairs; {len(upward)} import statements)")
    for m, t in pairs:
        lines = ", ".join(str(line) for mm, tt, line in upward if (mm, tt) == (m, t))
        print(f"  {m} ({LAYERS[layer_of(m)][0]}) -> {t} ({LAYERS[layer_of(t)][0]}): "
              f"line {lines}")
    if unplaced:
        print("modules in no layer: " + ", ".join(unplaced))
    return 1 if args.check and (pairs or cycles({m: {t for t, _, _ in e if t != m}
                                                  for m, e in edges.items()})) else 0


if __name__ == "__main__":
    raise SystemExit(main())
