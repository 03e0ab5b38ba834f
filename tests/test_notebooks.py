"""The Colab notebooks: committed without outputs, and each runs top to bottom in FAST mode.

Each notebook's source is a jupytext percent-format script next to it
(``notebooks/01_normalization_catalogue.py`` for ``01_normalization_catalogue.ipynb``, ...),
linted by ruff with the rest of the code; ``notebooks/build.py`` builds the ``.ipynb`` files from
them, and the files on disk must be exactly what it builds. Every notebook is executed with
nbclient in a fresh ``python3`` kernel of this interpreter (``GEONORM_JAX_FAST=1``, a temporary
``GEONORM_JAX_CACHE``); any cell error fails the test.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("jupytext")

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
EXPECTED = (
    "01_normalization_catalogue.ipynb",
    "02_train_egnn_nbody.ipynb",
    "03_geometric_match.ipynb",
    "04_molecules_allegro.ipynb",
    "05_md_with_trained_potential.ipynb",
)
CELL_TIMEOUT_S = 600


def _load_build():
    spec = importlib.util.spec_from_file_location("notebooks_build", NOTEBOOK_DIR / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read(name: str):
    return nbformat.read(NOTEBOOK_DIR / name, as_version=4)


def test_expected_notebooks_exist():
    found = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))
    assert found == sorted(EXPECTED)
    sources = sorted(p.name for p in _load_build().sources())
    assert sources == sorted(name.replace(".ipynb", ".py") for name in EXPECTED)


@pytest.mark.parametrize("name", EXPECTED)
def test_source_is_percent_script(name):
    text = (NOTEBOOK_DIR / name.replace(".ipynb", ".py")).read_text()
    assert text.startswith("# %% [markdown]\n"), f"{name}: the source starts with its title cell"
    assert "# %%\n" in text


@pytest.mark.parametrize("name", EXPECTED)
def test_committed_without_outputs(name):
    nb = _read(name)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert cell.get("outputs") == [], f"{name} cell {i} has outputs"
        assert cell.get("execution_count") is None, f"{name} cell {i} has an execution count"


@pytest.mark.parametrize("name", EXPECTED)
def test_matches_build_script(name):
    """The committed ``.ipynb`` is byte for byte what build.py makes of the ``.py`` source."""
    built = _load_build().render(name)
    on_disk = (NOTEBOOK_DIR / name).read_text()
    assert on_disk == built, (
        f"{name} differs from its source {name.replace('.ipynb', '.py')}; "
        "run `python notebooks/build.py`")


def test_sources_pass_ruff():
    """The notebook sources are code like the rest: ruff checks them (notebooks/ruff.toml)."""
    pytest.importorskip("ruff")
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "notebooks"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", EXPECTED)
def test_first_cell_installs_only_where_missing(name):
    nb = _read(name)
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert "google.colab" in first_code.source
    assert f"git+{_load_build().REPOSITORY_URL}" in first_code.source
    assert 'find_spec("geonorm_jax") is None' in first_code.source  # installed: nothing to do
    assert '"-e", str(checkout)' in first_code.source  # a local checkout installs itself
    assert any('os.environ.get("GEONORM_JAX_FAST"' in c.source for c in nb.cells
               if c.cell_type == "code")


def test_install_cell_is_the_same_everywhere():
    """The install cell comes from one place (notebooks/_setup.py) into every notebook."""
    firsts = {name: next(c.source for c in _read(name).cells if c.cell_type == "code")
              for name in EXPECTED}
    assert len(set(firsts.values())) == 1, "install cells differ between notebooks"
    assert f'"{_load_build().INSTALL_SOURCE}"' in firsts[EXPECTED[0]]


@pytest.mark.parametrize("name", EXPECTED)
def test_colab_badge_points_at_itself(name):
    first = _read(name).cells[0]
    assert first.cell_type == "markdown"
    assert f"]({_load_build().colab_url(name)})" in first.source


def test_repository_address_in_one_place():
    """The README's Colab badges and install line use pyproject's ``Repository`` address."""
    build = _load_build()
    readme = (ROOT / "README.md").read_text()
    for name in EXPECTED:
        assert build.colab_url(name) in readme, f"README lacks the badge address of {name}"
    assert build.INSTALL_SOURCE in readme
    repos = set(re.findall(r"github\.com/([\w.-]+/[\w.-]+)", readme))
    assert repos == {build.REPO}, f"README names {repos}, pyproject.toml {build.REPO}"


@pytest.mark.parametrize("name", EXPECTED)
def test_states_run_time(name):
    first = _read(name).cells[0].source
    assert "**Run time.**" in first and "TODO" not in first


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_runs_in_fast_mode(name, tmp_path, monkeypatch):
    # The kernel inherits this environment: FAST mode, a private data cache, the inline
    # matplotlib backend, and this interpreter first on PATH (jupyter_client also maps the
    # kernelspec's "python" to sys.executable).
    monkeypatch.setenv("GEONORM_JAX_FAST", "1")
    monkeypatch.setenv("GEONORM_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # FAST sizes make run time negligible and XLA compile time dominant: compile without
    # LLVM optimizations (about 2x faster to compile on CPU; same IEEE semantics).
    monkeypatch.setenv("XLA_FLAGS", (os.environ.get("XLA_FLAGS", "")
                                     + " --xla_backend_optimization_level=0").strip())
    monkeypatch.setenv("PATH", str(pathlib.Path(sys.executable).parent) + os.pathsep
                       + os.environ.get("PATH", ""))
    nb = _read(name)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first failing cell
    elapsed = time.perf_counter() - start
    print(f"{name}: {elapsed:.1f} s in FAST mode")
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", f"{name} cell {i}: {out}"
