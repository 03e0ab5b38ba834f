"""Build the Colab notebooks ``notebooks/*.ipynb`` from their sources ``notebooks/*.py``.

Each notebook's one source of truth is a jupytext percent-format script next to it
(``01_normalization_catalogue.py`` for ``01_normalization_catalogue.ipynb``, ...): ``# %%``
starts a code cell, ``# %% [markdown]`` a Markdown cell whose lines are commented out, and
IPython magics are commented (``# %matplotlib inline``). The scripts are linted by ruff with the
rest of the code; the ``.ipynb`` files are generated, never edited by hand. The cells every
notebook starts with (install geonorm-jax where missing, the ``FAST`` switch) live once, in
``_setup.py``: a source cell tagged ``install`` or ``fast`` (``# %% tags=["install"]``) is
replaced by ``_setup.py``'s cell of the same tag. After changing a script, run

    python notebooks/build.py            # rebuild every notebook
    python notebooks/build.py --check    # exit 1 if a committed notebook is stale

Every notebook is written without outputs, with ``execution_count`` null, stable cell ids and
fixed metadata, so building twice gives identical files. ``tests/test_notebooks.py`` checks that
the committed notebooks are exactly what this script builds and executes each of them with
``GEONORM_JAX_FAST=1``.
"""

from __future__ import annotations

import pathlib
import sys
import tomllib

import jupytext
import nbformat

HERE = pathlib.Path(__file__).resolve().parent
# The repository address lives in one place, pyproject.toml's [project.urls]; the install cells
# and Colab badges of the notebooks and the README's badges follow it (tests/test_notebooks.py).
REPOSITORY_URL = tomllib.loads((HERE.parent / "pyproject.toml").read_text())["project"]["urls"][
    "Repository"
]
REPO = REPOSITORY_URL.removeprefix("https://github.com/")
INSTALL_SOURCE = f"geonorm-jax @ git+{REPOSITORY_URL}"

METADATA = {
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
    "colab": {"provenance": []},
    "accelerator": "NONE",
}


def colab_url(filename: str) -> str:
    return f"https://colab.research.google.com/github/{REPO}/blob/main/notebooks/{filename}"


def sources() -> list[pathlib.Path]:
    """The notebook scripts: ``NN_name.py`` in this folder."""
    return sorted(HERE.glob("[0-9][0-9]_*.py"))


def shared_cells() -> dict[str, nbformat.NotebookNode]:
    """``{tag: cell}`` of ``_setup.py``: the cells every notebook starts with."""
    setup = jupytext.read(HERE / "_setup.py", fmt="py:percent")
    return {tag: cell for cell in setup.cells for tag in cell.metadata.get("tags", [])}


def build(name: str) -> nbformat.NotebookNode:
    """The notebook built from ``name`` (``NN_name.py`` or ``NN_name.ipynb``), with each cell
    tagged like a cell of ``_setup.py`` replaced by that cell."""
    nb = jupytext.read(HERE / pathlib.Path(name).with_suffix(".py").name, fmt="py:percent")
    nb.metadata = nbformat.from_dict(METADATA)
    shared = shared_cells()
    for cell in nb.cells:
        tags = [t for t in cell.metadata.get("tags", []) if t in shared]
        if tags:
            cell.source = shared[tags[0]].source
    for i, cell in enumerate(nb.cells):  # stable ids: rebuilding gives identical files
        cell.id = f"cell-{i:02d}"
        cell.metadata = nbformat.from_dict({})  # no jupytext layout hints
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nbformat.validate(nb)
    return nb


def render(name: str) -> str:
    """The exact text of the ``.ipynb`` file built from ``name``."""
    text = nbformat.writes(build(name))
    return text if text.endswith("\n") else text + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    check = "--check" in argv
    names = [a for a in argv if a != "--check"] or [p.name for p in sources()]
    stale = []
    for name in names:
        path = HERE / pathlib.Path(name).with_suffix(".ipynb").name
        text = render(name)
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.name)
            continue
        path.write_text(text)
        print(f"wrote {path.relative_to(HERE.parent)}")
    if stale:
        print("stale (run `python notebooks/build.py`):", ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
