"""The documentation site builds with ``mkdocs build --strict`` (as CI builds it), its nav is
current, and the API reference shows every public name of ``geonorm_jax``."""

from __future__ import annotations

import importlib
import pathlib
import re
import subprocess
import sys
import zlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))

import gen_api  # noqa: E402


def _inventory(path: pathlib.Path) -> set[str]:
    """The object names of a Sphinx ``objects.inv`` (four header lines, then zlib)."""
    data = path.read_bytes()
    start = 0
    for _ in range(4):
        start = data.index(b"\n", start) + 1
    lines = zlib.decompress(data[start:]).decode().splitlines()
    return {ln.split(" ", 1)[0] for ln in lines if ln.strip()}


@pytest.fixture
def site(tmp_path_factory):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    pytest.importorskip("material")
    out = tmp_path_factory.mktemp("site")
    env = {"NO_MKDOCS_2_WARNING": "1", "PATH": str(pathlib.Path(sys.executable).parent) + ":"
           + __import__("os").environ.get("PATH", "")}
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=900,
                         env={**__import__("os").environ, **env})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    return out


def test_mkdocs_build_strict_and_api_has_every_public_name(site):
    """One build (a module fixture would build once per xdist worker): the strict build
    passes, the main pages exist, and the API reference shows every public name."""
    for page in ("index.html", "guide/choosing/index.html", "layers/coords/index.html",
                 "api/norms/index.html", "experiments/norm_zoo/index.html",
                 "notebooks/01_normalization_catalogue/index.html"):
        assert (site / page).exists(), page
    assert (site / "experiments/results/norm_zoo/norm_zoo.png").exists()
    assert "geo_norm_shared" in (site / "layers/coords/index.html").read_text()
    _check_api_names(site)


def _check_api_names(site):
    """Every name of every ``__all__`` of ``geonorm_jax`` is an anchor of the API pages: its
    own dotted name (mkdocstrings, or the runtime entry of a name bound at import time) or,
    for a re-exported function or class, its canonical one."""
    ids = set()
    for page in (site / "api").rglob("*.html"):
        ids |= set(re.findall(r'id="([^"]+)"', page.read_text()))
    ids |= _inventory(site / "objects.inv")
    missing = []
    for module in gen_api.public_modules():
        mod = importlib.import_module(module)
        if module not in ids:
            missing.append(module)
        for name in mod.__all__:
            obj = getattr(mod, name)
            canonical = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
            if not {f"{module}.{name}", canonical} & ids:
                missing.append(f"{module}.{name}")
    assert not missing, f"not in the API reference: {missing}"


def test_nav_is_current():
    run = subprocess.run([sys.executable, "docs/gen.py", "--check"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


def test_generated_pages_cover_the_catalogue():
    import gen

    pages = gen.pages()
    from geonorm_jax.norms import catalog

    text = "".join(v for k, v in pages.items() if k.startswith("layers/"))
    for info in catalog.CATALOG:
        assert f"## `{info.name}`" in text, info.name
    guide = pages["guide/choosing.md"]
    assert "experiments/results/norm_zoo/results.json" in guide
    assert guide.count("\n| ") >= 8  # header and the decision rows
