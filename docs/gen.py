"""The documentation pages that come from the code and the committed results.

:func:`pages` makes ``layers/`` (one page per catalogue family and an index, from
``geonorm_jax/norms/catalog.py``, the audit and the benchmark), ``api/`` (the mkdocstrings
reference of every module with ``__all__``), ``models/index.md`` (the model registry),
``notebooks/NN_*.md`` (the jupytext sources) and ``guide/choosing.md`` (the norm-choice
table). ``docs/hooks.py`` calls it at every ``mkdocs build``, so these pages are never
committed and cannot drift. This script writes the ``nav`` of ``mkdocs.yml`` (between
``# nav:begin`` and ``# nav:end``) and, with ``--pages DIR``, the generated pages into ``DIR``
to read them. The experiment pages (``docs/experiments/``) are committed, written by
``python -m experiments.report``.

Usage::

    python docs/gen.py                 # rewrite the nav of mkdocs.yml
    python docs/gen.py --check         # exit 1 if the nav is stale
    python docs/gen.py --pages /tmp/p  # also write the generated pages there
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import gen_api  # noqa: E402
import gen_guide  # noqa: E402
import gen_layers  # noqa: E402

from experiments import report  # noqa: E402

MKDOCS = ROOT / "mkdocs.yml"
NAV_BEGIN, NAV_END = "# nav:begin", "# nav:end"
HEADER = "<!-- generated at build time by docs/gen.py; edit the generator -->\n"

HAND_WRITTEN = (
    ("Home", "index.md"),
    ("Getting started", "getting-started.md"),
    ("Concepts", [("Norm, Linen, NNX, Equinox", "concepts/norm.md"),
                  ("Layouts and masks", "concepts/layouts.md"),
                  ("Placements", "concepts/placements.md"),
                  ("The catalogue", "concepts/catalogue.md"),
                  ("Package map", "concepts/package.md"),
                  ("Numerics and flat layouts", "numerics.md"),
                  ("Design notes", "design.md")]),
)


def pages() -> dict[str, str]:
    """``{path under docs/: text}`` of every page this generator owns."""
    out = {}
    out.update(gen_layers.pages())
    out.update(gen_api.api_pages())
    out.update(gen_api.models_page())
    out.update(gen_api.notebook_pages())
    out.update(gen_guide.page())
    return {k: HEADER + v for k, v in out.items()}


def _titles(rel_paths) -> list[tuple[str, str]]:
    out = []
    for rel in rel_paths:
        path = DOCS / rel
        first = path.read_text().splitlines() if path.exists() else []
        title = next((ln[2:].strip().replace("`", "") for ln in first if ln.startswith("# ")),
                     Path(rel).stem)
        out.append((title, rel))
    return out


def nav(generated: dict[str, str]) -> list:
    """The site's navigation."""
    notebooks = sorted(k for k in generated if k.startswith("notebooks/"))
    api = [f"api/{slug}.md" for slug, *_ in gen_api.API_PAGES]
    experiments = [f"experiments/{name}.md" for name in report.PAGES]
    return list(HAND_WRITTEN) + [
        ("Choosing a normalization", "guide/choosing.md"),
        ("Layer catalogue", [("Overview", "layers/index.md")] + gen_layers.nav()),
        ("The geometric-match audit", "audit.md"),
        ("Models", [("Registered models", "models/index.md"),
                    ("Your own model", "models/custom.md")]),
        ("Data, training, MD", [("Charged N-body data", "data.md"),
                                ("Training", "training.md"),
                                ("Molecular energies and forces", "molecules.md"),
                                ("Using a trained potential", "potentials.md"),
                                ("Scaling out", "parallel.md"),
                                ("Reliability", "reliability.md")]),
        ("Experiments", [("Overview", "experiments/index.md"),
                         ("Reproducing the papers", "reproducing.md")]
         + _titles(experiments)),
        ("Performance", "performance.md"),
        ("Notebooks", [("Overview", "notebooks/index.md")]
         + [(generated_title(generated[k], k), k) for k in notebooks]),
        ("API reference", [("Overview", "api/index.md")]
         + [(f"geonorm_jax.{s}" if s != "core" else "geonorm_jax", p)
            for s, p in zip((s for s, *_ in gen_api.API_PAGES), api, strict=True)]),
        ("Development", "development.md"),
    ]


def generated_title(text: str, rel: str) -> str:
    """The first H1 of a page's text."""
    for ln in text.splitlines():
        if ln.startswith("# "):
            return ln[2:].strip().replace(":", " -")
    return Path(rel).stem


def nav_yaml(items, indent: int = 2) -> list[str]:
    """``items`` as YAML lines for ``mkdocs.yml``."""
    out = []
    for title, target in items:
        title = title.replace('"', "'")
        if isinstance(target, list):
            out.append(" " * indent + f'- "{title}":')
            out += nav_yaml(target, indent + 4)
        else:
            out.append(" " * indent + f'- "{title}": {target}')
    return out


def mkdocs_text(generated: dict[str, str]) -> str:
    """``mkdocs.yml`` with its nav block regenerated."""
    text = MKDOCS.read_text()
    head, rest = text.split(NAV_BEGIN, 1)
    _, tail = rest.split(NAV_END, 1)
    return head + NAV_BEGIN + "\nnav:\n" + "\n".join(nav_yaml(nav(generated))) + "\n" + \
        NAV_END + tail


def main(argv: list[str] | None = None) -> int:
    """Write (or ``--check``) the nav of ``mkdocs.yml``."""
    p = argparse.ArgumentParser(prog="python docs/gen.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true",
                   help="exit 1 if the nav of mkdocs.yml is stale (nothing is written there)")
    p.add_argument("--pages", metavar="DIR", help="also write the generated pages into DIR")
    args = p.parse_args(argv)
    generated = pages()
    if args.pages:
        for rel, text in generated.items():
            path = Path(args.pages) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        print(f"wrote {len(generated)} generated pages under {args.pages}")
    text = mkdocs_text(generated)
    if args.check:
        ok = MKDOCS.read_text() == text
        print("the nav of mkdocs.yml is " + ("up to date" if ok else
                                              "STALE; run `python docs/gen.py`"))
        return 0 if ok else 1
    MKDOCS.write_text(text)
    print("wrote the nav of mkdocs.yml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
