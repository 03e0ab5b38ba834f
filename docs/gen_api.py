"""The API reference, model and notebook pages. Called by ``docs/gen.py``.

* API: one page per top-level part of ``geonorm_jax``, with a mkdocstrings block for every
  module that defines ``__all__`` (found on disk, so a new module gets its block at the next
  ``python docs/gen.py``).
* Models: ``geonorm_jax.models.registry.describe()`` (what ``geonorm-jax models --json``
  prints), one section per registered model.
* Notebooks: the jupytext percent-format sources ``notebooks/NN_*.py`` as pages (Markdown cells
  as text, code cells as Python blocks), with the Colab link of the committed ``.ipynb``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "geonorm_jax"
REPO = "https://github.com/geonorm-jax/geonorm-jax"
COLAB = "https://colab.research.google.com/github/geonorm-jax/geonorm-jax/blob/main/notebooks"

#: (page slug, title, description); a module belongs to the page of its first sub-package,
#: modules directly under ``geonorm_jax`` to ``core``.
API_PAGES = (
    ("core", "geonorm_jax", "The package root, geometry, the test kit, the Flax wrappers and "
     "the compiler options of the library's jitted steps."),
    ("norms", "geonorm_jax.norms", "Every layer as a pure `Norm(init, apply)`, the catalogue."),
    ("models", "geonorm_jax.models", "EGNN, Allegro, SchNet, GemNet-T, the model registry."),
    ("data", "geonorm_jax.data", "The N-body simulator and the molecular data."),
    ("train", "geonorm_jax.train", "The training loop, its tasks, checkpoints and run "
     "directories."),
    ("audit", "geonorm_jax.audit", "The geometric-match audit."),
    ("bench", "geonorm_jax.bench", "The benchmark."),
    ("parallel", "geonorm_jax.parallel", "Batch and node sharding."),
    ("potentials", "geonorm_jax.potentials", "Trained potentials: ASE, jax-md, JAX MD."),
)


def has_all(path: Path) -> bool:
    """Whether the module file assigns ``__all__`` at top level."""
    tree = ast.parse(path.read_text())
    return any(isinstance(n, (ast.Assign, ast.AnnAssign)) and any(
        isinstance(t, ast.Name) and t.id == "__all__"
        for t in (n.targets if isinstance(n, ast.Assign) else [n.target])) for n in tree.body)


def unseen_names(modules: list[str]) -> dict[str, list[str]]:
    """``{module: names of its __all__ that static analysis (griffe, what mkdocstrings reads)
    does not find}``: names bound by tuple unpacking, ``globals().update`` or a star import of
    data. :func:`api_pages` documents them from the imported module instead."""
    import griffe

    pkg = griffe.load("geonorm_jax", search_paths=[str(ROOT)], resolve_aliases=True,
                      resolve_implicit=True, resolve_external=False)
    out = {}
    for module in modules:
        static = pkg[module.removeprefix("geonorm_jax.")] if module != "geonorm_jax" else pkg
        names = [n for n in importlib.import_module(module).__all__ if n not in static.members]
        if names:
            out[module] = names
    return out


def _runtime_entry(module: str, name: str) -> list[str]:
    """A heading with the object's dotted name as anchor, its kind and the first paragraph
    of its docstring (or its value, for data)."""
    obj = getattr(importlib.import_module(module), name)
    head = [f"### `{name}` {{ #{module}.{name} }}", ""]
    if inspect.isclass(obj) or inspect.isfunction(obj):
        kind = "class" if inspect.isclass(obj) else "function"
        doc = (inspect.getdoc(obj) or "").split("\n\n")[0]
        return head + [f"*{kind}* `{obj.__module__}.{obj.__qualname__}`", "", doc, ""]
    return head + [f"`{name} = {obj!r}`", ""]


def public_modules() -> list[str]:
    """Dotted names of every module of ``geonorm_jax`` that defines ``__all__``."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if not has_all(path):
            continue
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append(".".join(parts))
    return out


def api_page_of(module: str) -> str:
    """The API page slug of a dotted module name."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in {slug for slug, *_ in API_PAGES}:
        return parts[1]
    return "core"


def api_pages() -> dict[str, str]:
    """``{path under docs/: text}`` of the API reference."""
    modules = public_modules()
    unseen = unseen_names(modules)
    out = {}
    index = ["# API reference", "",
             "Generated from the docstrings by mkdocstrings: every module of `geonorm_jax` that "
             "declares `__all__`, with every public name in it. One page per part of the "
             "package:", ""]
    for slug, title, blurb in API_PAGES:
        mods = [m for m in modules if api_page_of(m) == slug]
        index.append(f"- [`{title}`]({slug}.md): {blurb} ({len(mods)} modules)")
        text = [f"# `{title}`", "", blurb, ""]
        text += [f"- [`{m}`](#{m})" for m in mods] + [""]
        for m in mods:
            text += [f"::: {m}", ""]
            if m in unseen:
                text += [f"Also exported by `{m}` (bound at import time):", ""]
                for name in unseen[m]:
                    text += _runtime_entry(m, name)
        out[f"api/{slug}.md"] = "\n".join(text).rstrip() + "\n"
    out["api/index.md"] = "\n".join(index) + "\n"
    return out


def models_page() -> dict[str, str]:
    """``{"models/index.md": text}`` from the model registry."""
    from geonorm_jax.models import registry

    rows = registry.describe()
    text = ["# Models", "",
            "The registered models, generated from `geonorm_jax.models.registry` "
            "(`geonorm-jax models --json` prints the same). Every model takes the shared knobs "
            "`hidden`, `num_layers`, `cutoff` and `builtin_norm`; a catalogue layer goes at "
            "one of its *norm places*, chosen by the layer's kind. Adding your own model: "
            "[One registry, and your own model](custom.md).", "",
            "| model | task | description | norm places |", "|---|---|---|---|"]
    for r in rows:
        places = ", ".join(f"`{p['name']}` ({'/'.join(p['kinds'])})" for p in r["norm_places"])
        text.append(f"| [`{r['name']}`](#{r['name']}) | {r['task']} | {r['description']} | "
                    f"{places or '—'} |")
    text.append("")
    for r in rows:
        text += [f"## `{r['name']}`", "", r["description"], "",
                 f"- **Module:** [`{r['module']}`][{r['module']}]",
                 f"- **Task:** `{r['task']}`",
                 f"- **Citation:** {r['citation']}",
                 "- **Knobs** (shared name: the model's own names): "
                 + "; ".join(f"`{k}`: {', '.join(f'`{x}`' for x in v)}"
                             for k, v in r["knobs"].items()),
                 "- **Built-in normalization** (`builtin_norm`): "
                 + "; ".join(f"`{k}` → `{json.dumps(v)}`" for k, v in r["builtin_norm"].items()),
                 "", "**Norm places:**", ""]
        text += [f"- `{p['name']}` ({', '.join(p['kinds'])}): {p['description']}"
                 for p in r["norm_places"]] or ["- none"]
        text += ["", f"Default place per kind: `{json.dumps(r['default_places'])}`", "",
                 "**Defaults:**", "", "```json", json.dumps(r["defaults"], indent=2), "```", ""]
        for size, kw in (r.get("sizes") or {}).items():
            text += [f"Size `{size}`: `{json.dumps(kw)}`", ""]
    return {"models/index.md": "\n".join(text).rstrip() + "\n"}


#: cell tags of the notebooks' setup cells (install, FAST switch), left off the pages
SETUP_TAGS = ('"install"', '"fast"')


def _cells(source: str) -> list[tuple[str, str]]:
    """``(kind, text)`` cells of a jupytext percent-format file (header and setup cells
    skipped)."""
    lines = source.splitlines()
    if lines and lines[0].startswith("# ---"):
        end = next(i for i in range(1, len(lines)) if lines[i].startswith("# ---"))
        lines = lines[end + 1:]
    cells, kind, buf = [], None, []
    for line in lines + ["# %%"]:
        if line.startswith("# %%"):
            if kind not in (None, "skip") and "\n".join(buf).strip():
                cells.append((kind, "\n".join(buf).strip("\n")))
            kind, buf = ("markdown" if "[markdown]" in line else
                         "skip" if any(t in line for t in SETUP_TAGS) else "code"), []
        elif kind is not None:
            buf.append(line)
    return cells


def notebook_page(path: Path) -> str:
    """One notebook source as a Markdown page."""
    ipynb = path.with_suffix(".ipynb").name
    text = []
    for kind, body in _cells(path.read_text()):
        if kind == "markdown":
            text.append("\n".join(re.sub(r"^# ?", "", ln) for ln in body.splitlines()))
        else:
            text.append(f"```python\n{body}\n```")
        text.append("")
    head = text[0].splitlines()
    title = head[0] if head and head[0].startswith("# ") else f"# {path.stem}"
    rest = "\n".join(head[1:] if head and head[0].startswith("# ") else head)
    links = (f"Source: [`notebooks/{path.name}`]"
             f"({REPO}/blob/main/notebooks/{path.name}) (this page is generated from it; the "
             f"outputs appear when you run it; [`{ipynb}`]({COLAB}/{ipynb}) in Colab)")
    return "\n".join([title, "", links, "", rest] + text[1:]).rstrip() + "\n"


def notebook_pages() -> dict[str, str]:
    """``{path under docs/: text}`` for ``notebooks/NN_*.py``."""
    return {f"notebooks/{path.stem}.md": notebook_page(path)
            for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))}
