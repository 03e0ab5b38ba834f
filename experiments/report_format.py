"""Formatting helpers of :mod:`experiments.report`: numbers, tables, run metadata and the
section decorator shared by every experiment's section of the generated results."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

from experiments.common import finite

__all__ = ["_read", "_load", "_f", "_ms", "_meta", "_table", "_missing", "_section", "_intro",
           "_budget", "_paper", "_verdicts", "_audit"]


def _read(path: Path) -> dict | None:
    """The JSON document at ``path``, or None if there is none."""
    return json.loads(path.read_text()) if path.exists() else None


def _load(results: Path, name: str) -> dict | None:
    """``results/<name>/results.json``, or None if the experiment has not been run."""
    return _read(results / name / "results.json")


def _f(x, digits: int = 4) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if not finite(x):
        return "—"
    if x == 0:
        return "0"
    if abs(x) < 1e-3 or abs(x) >= 1e4:
        return f"{x:.{max(1, digits - 2)}e}"
    return f"{x:.{digits}g}"


def _ms(d: dict) -> str:
    if not d or d.get("mean") is None:
        return "—"
    return f"{_f(d['mean'])} ± {_f(d['std'], 2)}"


def _meta(doc: dict) -> str:
    m = doc["machine"]
    skipped = doc.get("skipped_cells") or []
    line = (f"*Preset `{doc['preset']}`, `{doc['command']}`, geonorm-jax {doc['version']}, "
            f"{doc['device']} ({m['cpu_count']} cores, {', '.join(m['jax_devices'])}), "
            f"sum of the cells' wall times {doc.get('cells_wall_time_s', 0) / 60:.1f} min "
            f"(this invocation {doc['wall_time_s'] / 60:.1f} min; cells are cached).*")
    if skipped:
        line += (f" **Incomplete:** {len(skipped)} cell(s) not run (time budget or `--only`): "
                 f"{', '.join(f'`{s}`' for s in skipped)}.")
    return line


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _missing(name: str) -> list[str]:
    return [f"Not run yet: `python -m experiments.{name} --preset cpu`.", ""]


def _section(number: int, title: str) -> Callable:
    """Decorator for an experiment's section: ``body(doc) -> lines`` becomes
    ``section(doc | None) -> lines`` under the heading ``### <number>. `<name>`: <title>``
    (``name`` is the body's name, the experiment's module), or the heading and a 'Not run
    yet' line when ``doc`` is None."""
    def wrap(body: Callable[[dict], list[str]]) -> Callable[[dict | None], list[str]]:
        @functools.wraps(body)
        def section(doc: dict | None) -> list[str]:
            out = [f"### {number}. `{body.__name__}`: {title}", ""]
            return out + (_missing(body.__name__) if doc is None else body(doc))
        return section
    return wrap


def _intro(doc: dict, *paragraphs: str) -> list[str]:
    """The run's metadata line (:func:`_meta`), then ``paragraphs``, each followed by a blank
    line."""
    out = [_meta(doc), ""]
    for text in paragraphs:
        out += [text, ""]
    return out


def _budget(c: dict) -> str:
    """The training budget of an experiment's ``config``: samples, batch size, epochs."""
    return f"{c['train']} training samples, batch {c['batch_size']}, {c['epochs']} epochs"


def _paper(doc: dict) -> str:
    """The paper's claim the experiment tests, as a paragraph."""
    return "Paper: " + doc["results"]["paper"]["text"]


def _verdicts(doc: dict) -> list[str]:
    """One bullet per verdict: ``- `claim`: **status** (other fields)``."""
    out = []
    for k, v in doc["results"]["verdicts"].items():
        extra = ", ".join(f"{a}: {b}" for a, b in v.items() if a != "status")
        out.append(f"- `{k}`: **{v['status']}** ({extra})")
    return out


def _audit(row: dict) -> str:
    """A zoo row's audit cell: ``match``, ``mismatch: <violated rules>`` or ``n/a``."""
    if row["matched"] is None:
        return "n/a"
    return "match" if row["matched"] else "mismatch: " + ", ".join(row["violated"] or [])
