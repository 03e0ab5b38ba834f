"""``audit(norm, task)``: measure every probe for one layer and judge the geometric match."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Sequence

import jax

from geonorm_jax.audit.cases import clear_jit_cache, make_case
from geonorm_jax.audit.probes import PROBES, ProbeResult, run_probe
from geonorm_jax.audit.symmetries import TaskSymmetry, check_match, get_symmetry

__all__ = ["AuditResult", "audit", "audit_table", "judge"]


@dataclasses.dataclass
class AuditResult:
    """The measured properties of one layer and, with a task, its geometric match.

    Attributes:
      name: the layer's name.
      kind: the input kind probed.
      properties: ``{probe name: ProbeResult}``.
      task: the task name, or None.
      matched: True/False against ``task`` (Definition 3); None without a task or when the
        task does not judge this kind (weights; coordinates for an image task).
      violations: the violated conditions, each with the measured number.
      violated: the probe names behind ``violations`` (``"SO3"``, ``"batch"``, ``"radial"``).
      info: the catalogue entry (``NormInfo``) when audited from the catalogue, else None.
    """

    name: str
    kind: str
    properties: dict[str, ProbeResult]
    task: str | None = None
    matched: bool | None = None
    violations: list[str] = dataclasses.field(default_factory=list)
    violated: list[str] = dataclasses.field(default_factory=list)
    info: object = None

    def to_dict(self) -> dict:
        d = {
            "name": self.name,
            "kind": self.kind,
            "task": self.task,
            "matched": self.matched,
            "violations": list(self.violations),
            "violated": list(self.violated),
            "properties": {k: v.to_dict() for k, v in self.properties.items()},
        }
        if self.info is not None:
            d.update(formula=self.info.formula, paper=self.info.paper,
                     survey_row=self.info.survey_row, reduced_axes=self.info.reduced_axes,
                     family=self.info.family)
        return d

    def __str__(self) -> str:
        lines = [f"{self.name} ({self.kind})"]
        for name, r in self.properties.items():
            v = "" if r.value is None else f" {r.value:.1e}"
            lines.append(f"  {name:<12} {r.verdict}{v}")
        if self.task is not None:
            lines.append(f"  task {self.task}: {'matched' if self.matched else 'MISMATCHED'}")
            lines += [f"    - {v}" for v in self.violations]
        return "\n".join(lines)


def _resolve(norm, kind, context):
    """Accept a Norm, a NormInfo or a catalogue name; return (Norm, kind, context, info)."""
    from geonorm_jax.norms.catalog import NormInfo, get

    info = None
    if isinstance(norm, str):
        norm = get(norm)
    if isinstance(norm, NormInfo):
        info = norm
        kind = kind or info.kind
        context = tuple(context) if context is not None else info.context
        norm = info.make()
    kind = kind or getattr(norm, "kind", None)
    if kind is None:
        raise ValueError(
            "audit: the Norm states no kind; pass kind='features', 'vectors', 'coordinates' "
            "or 'weights'")
    return norm, kind, tuple(context or ()), info


def audit(
    norm,
    task: TaskSymmetry | str | None = None,
    *,
    key: jax.Array | None = None,
    kind: str | None = None,
    context: Sequence[str] | None = None,
    probes: Sequence[str] = PROBES,
    num_inputs: int = 3,
    training: bool = True,
    x64: bool = True,
    **case_kwargs,
) -> AuditResult:
    """Measure the geometric properties of ``norm`` and, with ``task``, judge Definition 3.

    Each probe runs on ``num_inputs`` random inputs (batch 3, 6 nodes, 4 channels by default)
    with trained-like parameters (init, then perturbed: see
    :func:`~geonorm_jax.audit.cases.perturb_like_trained`), in float64 (``x64=True``
    enables it for the call) so that exact properties (~1e-15) separate from broken ones.

    Args:
      norm: a ``Norm``, a catalogue ``NormInfo`` or a catalogue name.
      task: a :class:`TaskSymmetry` or a preset name (``"nbody-dynamics"``, ...), or None.
      key: PRNG key (default ``PRNGKey(0)``).
      kind: the input kind, if the ``Norm`` does not state it.
      context: keyword context ``apply`` needs (``"mu0"``, ``"message"``); from the catalogue
        entry when auditing one; ``mu0`` is always given to coordinate layers.
      probes: which probes to run.
      num_inputs: random inputs per probe.
      training: the ``training`` flag for ``apply`` (batch independence is also measured in
        eval mode for layers with running state).
      x64: run in float64.
      **case_kwargs: ``batch``, ``nodes``, ``channels``, ``noise``, ``context_builders``
        for :func:`~geonorm_jax.audit.cases.make_case`.

    Returns:
      An :class:`AuditResult`.

    Example::

        result = audit(my_norm, "nbody-dynamics", kind="coordinates")
        print(result.matched, result.violations)
    """
    norm, kind, context, info = _resolve(norm, kind, context)
    key = jax.random.PRNGKey(0) if key is None else key
    with jax.enable_x64(True) if x64 else contextlib.nullcontext():
        kcases, kprobe = jax.random.split(key)
        cases = [
            make_case(norm, kind, jax.random.fold_in(kcases, i), context=context,
                      training=training, **case_kwargs)
            for i in range(num_inputs)
        ]
        stateful = bool(jax.tree_util.tree_leaves(cases[0].state))
        props = {
            name: run_probe(name, cases, jax.random.fold_in(kprobe, j), stateful=stateful)
            for j, name in enumerate(probes)
        }
    clear_jit_cache()
    name = info.name if info is not None else getattr(norm, "name", "custom")
    result = AuditResult(name, kind, props, info=info)
    if task is not None:
        t = get_symmetry(task)
        result.task = t.name
        result = judge(result, t)
    return result


def judge(result: AuditResult, task: TaskSymmetry | str) -> AuditResult:
    """A copy of ``result`` judged against another ``task`` (no new measurement)."""
    t = get_symmetry(task)
    if not t.applies_to(result.kind):
        return dataclasses.replace(result, task=t.name, matched=None, violated=[],
                                   violations=[f"not judged: {t.name} has no {result.kind}"])
    pairs = check_match(result.properties, t)
    return dataclasses.replace(
        result, task=t.name, matched=not pairs,
        violated=[k for k, _ in pairs], violations=[m for _, m in pairs])


def audit_table(
    entries: Iterable | None = None,
    task: TaskSymmetry | str | None = None,
    *,
    key: jax.Array | None = None,
    **kwargs,
) -> list[AuditResult]:
    """:func:`audit` for every entry (default: the whole catalogue), same key for each."""
    if entries is None:
        from geonorm_jax.norms.catalog import CATALOG

        entries = CATALOG
    return [audit(e, task, key=key, **kwargs) for e in entries]
