"""The symmetry of a task, as Definition 3 of the survey needs it.

A :class:`TaskSymmetry` states which groups the task's output is equivariant or invariant
to and which quantities it depends on (the training tasks of :mod:`geonorm_jax.train.tasks`
name theirs in :data:`geonorm_jax.models.registry.TASKS`). :func:`check_match` compares
measured layer properties (:mod:`geonorm_jax.audit.probes`) against it:

1. every group of the task (``equivariant_to`` and ``invariant_to``) is preserved by the layer
   (equivariance, or invariance where the task is invariant);
2. the layer introduces no invariance to a quantity in ``depends_on``;
3. ``samples_independent`` requires batch independence (the survey's Case 1);
   ``variable_size`` requires graph-size (padding) independence; ``size_extensive`` requires
   that duplicating a graph leaves each copy's per-node outputs unchanged.
"""

from __future__ import annotations

import dataclasses

from geonorm_jax.audit.probes import INVARIANCE_PROBES

__all__ = ["TaskSymmetry", "TASK_SYMMETRIES", "get_symmetry", "check_match", "GROUP_NAMES",
           "QUANTITIES"]

GROUP_NAMES = ("SO3", "O3", "translation", "permutation")
QUANTITIES = INVARIANCE_PROBES  # scale, shift, node_scale, radial


@dataclasses.dataclass(frozen=True)
class TaskSymmetry:
    """The symmetry of a task (Definition 2-3 of the survey).

    Attributes:
      name: preset name.
      equivariant_to: groups the output transforms with (``SO3``, ``O3``, ``translation``,
        ``permutation``).
      invariant_to: groups or changes the output ignores: any of ``GROUP_NAMES`` and of
        ``scale``, ``shift`` (e.g. the contrast invariance of style transfer).
      depends_on: quantities the output depends on, so that a layer invariant to them
        removes task-relevant information: ``scale``, ``shift``, ``node_scale``, ``radial``.
      samples_independent: the output for one sample must not depend on the others.
      variable_size: graphs of different sizes share a padded batch.
      size_extensive: the target is extensive (a sum over atoms), so two non-interacting
        copies must give twice one copy: per-node outputs of a duplicated graph unchanged.
      kinds: the input kinds a layer of this task acts on. Weight norms (``"weights"``) act on
        parameters, not data, so they are never judged (their invariance to a scale of W is
        a reparametrisation symmetry, not an invariance of the data).
      description: one line on the task.
      source: where the symmetry statement comes from.
    """

    name: str
    equivariant_to: tuple[str, ...] = ()
    invariant_to: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    samples_independent: bool = True
    variable_size: bool = False
    size_extensive: bool = False
    kinds: tuple[str, ...] = ("features", "vectors", "coordinates")
    description: str = ""
    source: str = ""

    def applies_to(self, kind: str | None) -> bool:
        """Whether a layer acting on ``kind`` can be judged for this task."""
        return kind in self.kinds

    def __post_init__(self):
        for g in self.equivariant_to:
            if g not in GROUP_NAMES:
                raise ValueError(f"TaskSymmetry.equivariant_to: expected {GROUP_NAMES}; "
                                 f"received {g!r}")
        for g in self.invariant_to:
            if g not in GROUP_NAMES + ("scale", "shift"):
                raise ValueError(
                    f"TaskSymmetry.invariant_to: expected {GROUP_NAMES + ('scale', 'shift')}; "
                    f"received {g!r}")
        for q in self.depends_on:
            if q not in QUANTITIES:
                raise ValueError(f"TaskSymmetry.depends_on: expected {QUANTITIES}; received {q!r}")


TASK_SYMMETRIES: dict[str, TaskSymmetry] = {
    t.name: t
    for t in (
        TaskSymmetry(
            "nbody-dynamics",
            equivariant_to=("SO3", "O3", "translation", "permutation"),
            depends_on=("scale", "shift", "node_scale", "radial"),
            description="predict particle positions after 1000 steps (charged N-body)",
            source="GeoNorm paper Sec. 3-5: E(3)-equivariant positions; forces depend on "
            "distances, so on scale and on each particle's radial position",
        ),
        TaskSymmetry(
            "molecular-energy",
            invariant_to=("SO3", "O3", "translation", "permutation"),
            depends_on=("scale", "node_scale", "radial"),
            variable_size=True,
            size_extensive=True,
            description="predict a molecule's energy (QM9/MD17-style)",
            source="survey Sec. 2 Case 1 (GemNet: molecules are independent); energy is "
            "E(3)-invariant, a sum over atoms, and depends on interatomic distances",
        ),
        TaskSymmetry(
            "md-energy-forces",
            equivariant_to=("SO3", "O3", "permutation"),
            invariant_to=("translation",),
            depends_on=("scale", "node_scale", "radial"),
            variable_size=True,
            size_extensive=True,
            description="predict a molecule's energy and the forces on its atoms (MD17-style "
            "molecular dynamics)",
            source="E(3)-invariant energy, O(3)-equivariant and translation-invariant forces "
            "(F = -dE/dx); molecules are independent (survey Case 1), the energy is extensive "
            "and both depend on interatomic distances",
        ),
        TaskSymmetry(
            "point-cloud-classification",
            invariant_to=("SO3", "O3", "translation", "permutation", "scale"),
            depends_on=("node_scale", "radial"),
            variable_size=True,
            description="classify a shape from its points (ModelNet-style, unit-sphere scaled)",
            source="survey Sec. 3.1 (Vector Neurons, Quaternion networks): rotation-invariant "
            "label, permutation-invariant, shape = relative radial structure",
        ),
        TaskSymmetry(
            "image-style-transfer",
            invariant_to=("scale",),
            kinds=("features",),
            depends_on=("node_scale",),
            description="stylise a content image (pixels = nodes, channels = colours)",
            source="survey Sec. 3: InstanceNorm is invariant to the content image's contrast, "
            "a symmetry of the task; each image is stylised on its own",
        ),
        TaskSymmetry(
            "set-prediction",
            equivariant_to=("permutation",),
            kinds=("features",),
            depends_on=("node_scale",),
            variable_size=True,
            description="per-element prediction on sets (Deep Sets)",
            source="survey Case 4 / SetNorm paper: permutation equivariance, no dependence "
            "between inputs, keep element-wise information (scale of each element)",
        ),
    )
}


def get_symmetry(task: TaskSymmetry | str) -> TaskSymmetry:
    """A preset by name, or the :class:`TaskSymmetry` itself."""
    if isinstance(task, TaskSymmetry):
        return task
    try:
        return TASK_SYMMETRIES[task]
    except KeyError:
        raise ValueError(
            f"task: expected a TaskSymmetry or one of {sorted(TASK_SYMMETRIES)}; received {task!r}"
        ) from None


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.1e}"


def check_match(props: dict, task: TaskSymmetry) -> list[tuple[str, str]]:
    """The violated conditions of Definition 3 as ``(probe name, sentence with the measured
    number)`` pairs; empty when the layer is matched.

    ``props`` maps probe names to :class:`~geonorm_jax.audit.probes.ProbeResult`.
    """
    violations: list[tuple[str, str]] = []

    def broken(name: str) -> bool:
        r = props.get(name)
        return r is not None and r.verdict in ("broken", "approx", "error")

    def why(name: str) -> str:
        r = props[name]
        if r.verdict == "error":
            return f"cannot run ({r.detail})"
        return f"rel. error {_fmt(r.value)}"

    for g in task.equivariant_to:
        if broken(g):
            violations.append((g, f"{g} equivariance broken: {why(g)}"))
    for g in task.invariant_to:
        if g in GROUP_NAMES and g not in task.equivariant_to and broken(g):
            # an invariant task accepts an invariant layer too (translation: the shift probe
            # for coordinates measures translation invariance)
            alt = props.get("shift") if g == "translation" else None
            if alt is None or alt.verdict != "invariant":
                violations.append((g, f"{g} equivariance/invariance broken: {why(g)}"))
        elif g in ("scale", "shift"):
            r = props.get(g)
            if r is None or r.verdict in ("n/a", "error", "invariant"):
                continue
            key = "homogeneous" if g == "scale" else "equivariant"
            other = r.extra.get(key)
            if other is None or other > 1e-4:
                violations.append((g,
                    f"neither invariant nor equivariant to the task's {g} symmetry: "
                    f"change {_fmt(r.value)}, {key} error {_fmt(other)}"))
    if task.samples_independent and broken("batch"):
        violations.append(
            ("batch", f"batch dependence (Case 1): sample 0 changes by {why('batch')}"))
    if task.variable_size and broken("padding"):
        violations.append(("padding", f"depends on padding / graph size: {why('padding')}"))
    if task.size_extensive and broken("replication"):
        violations.append(("replication",
                           f"not size-consistent (duplicated graph): {why('replication')}"))
    for q in task.depends_on:
        r = props.get(q)
        if r is not None and r.verdict == "invariant":
            violations.append((q,
                f"introduces {q} invariance the task does not have: output changes by "
                f"{_fmt(r.value)}"))
    return violations
