"""The package's import graph: no cycles, and no import from a lower layer to a higher one.

The graph is read from the source with :mod:`ast` (every ``import`` and ``from ... import``
statement, at module level or inside functions), so a cycle that only a lazy import hides is
still caught. ``from geonorm_jax.pkg import name`` counts as an import of
``geonorm_jax.pkg.name`` when that is a module, of ``geonorm_jax.pkg`` otherwise.

The layers, lowest first (a module may import its own subpackage and anything below it):
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "geonorm_jax"

LAYERS = (
    ("_io", "geometry", "xla"),
    ("testing",),
    ("norms",),
    ("_wrapping",),
    ("linen", "nnx", "equinox"),
    ("parallel",),
    ("models",),
    ("data",),
    ("audit",),
    ("train",),
    ("potentials",),
    ("bench",),
    ("cli",),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
__doc__ += "\n".join(f"    {i}. {', '.join(names)}" for i, names in enumerate(LAYERS))


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(module: str, level: int, importer: str, is_package: bool) -> str:
    if level == 0:
        return module
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def import_graph() -> dict[str, set[str]]:
    """``{module: {imported geonorm_jax modules}}`` for every module of the package."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node.module or "", node.level, name, is_package)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                if target.split(".")[0] == "geonorm_jax" and target != name:
                    while target not in modules:  # a name inside a module: its module
                        target = target.rsplit(".", 1)[0]
                    graph[name].add(target)
    return graph


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the root package


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return stack[stack.index(t) :] + [t]
            if t not in state and (found := visit(t)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_every_layer_is_ranked():
    layers = {_layer(m) for m in _modules()} - {None}
    assert layers <= set(RANK), f"give these a layer in LAYERS: {sorted(layers - set(RANK))}"


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_upward_imports():
    upward = []
    for module, targets in import_graph().items():
        src = _layer(module)
        for target in targets:
            dst = _layer(target)
            if src is None or src == dst or src not in RANK:
                continue  # the root package sits on top; a package may import itself
            if dst is None or RANK.get(dst, len(LAYERS)) > RANK[src]:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


@pytest.mark.parametrize(
    "graph, cyclic",
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
        ({"a": {"a"}}, True),
    ],
)
def test_cycle_finder_can_fail(graph, cyclic):
    assert (find_cycle(graph) is not None) == cyclic


def test_the_package_and_its_flax_wrappers_import_without_optional_extras():
    """``import geonorm_jax`` and the Linen and NNX wrappers work with every optional extra
    missing (Equinox for ``geonorm_jax.equinox``, ASE, RDKit, tblite, PySCF, jax-md, MkDocs):
    each is made unimportable in a fresh interpreter; ``geonorm_jax.equinox`` then raises an
    ImportError naming its extra."""
    optional = ["equinox", "ase", "rdkit", "tblite", "pyscf", "jax_md", "mkdocs"]
    code = (f"import sys; sys.modules.update(dict.fromkeys({optional!r}))\n"
            "import geonorm_jax, geonorm_jax.linen, geonorm_jax.nnx\n"
            "try:\n    import geonorm_jax.equinox\n"
            "except ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "'geonorm-jax[equinox]'" in out.stdout, out.stdout
