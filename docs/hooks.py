"""MkDocs hook: the generated pages, and the committed result files served in place.

The pages of ``docs/gen.py`` (layer catalogue, API reference, models, notebooks, the
norm-choice guide) are made at every build, from the code and the committed results. Every
``*.png``, ``*.json``, ``*.csv`` and ``*.md`` file under ``experiments/results/`` (except the
per-cell caches) is added to the site at the same path, so a page links to
``experiments/results/<name>/results.json`` or shows ``.../<plot>.png`` without a copy being
committed under ``docs/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mkdocs.structure.files import File, Files

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
RESULTS = ROOT / "experiments" / "results"
SUFFIXES = {".png", ".json", ".csv", ".md"}


def result_files() -> list[Path]:
    """The result files the site serves, relative to the repository root."""
    return sorted(p.relative_to(ROOT) for p in RESULTS.rglob("*")
                  if p.is_file() and p.suffix in SUFFIXES and "cells" not in p.parts)


def on_files(files: Files, config) -> Files:
    """Add the generated pages and the result files to the site's file collection."""
    if str(DOCS) not in sys.path:
        sys.path.insert(0, str(DOCS))
    import gen

    for rel, text in gen.pages().items():
        if files.get_file_from_path(rel) is not None:
            raise ValueError(f"docs/{rel}: expected no committed page at a generated path; "
                             "received one (delete it: docs/gen.py makes it at build time)")
        files.append(File.generated(config, rel, content=text))
    for rel in result_files():
        files.append(File(rel.as_posix(), src_dir=str(ROOT), dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    return files
