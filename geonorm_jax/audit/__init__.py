"""The geometric-match audit: the survey's Definition 3, measured for any ``Norm``.

A layer is *geometrically matched* to a task when (1) it preserves every symmetry of the task
and (2) it introduces no invariance the task does not have. :func:`audit` measures both
numerically (probes in :mod:`geonorm_jax.audit.probes` on the random cases of
:mod:`geonorm_jax.audit.cases`) and compares them with a
:class:`TaskSymmetry` (presets in :data:`TASK_SYMMETRIES`)::

    import geonorm_jax as gj
    result = gj.audit.audit(my_norm, "nbody-dynamics", kind="coordinates")
    print(result)                # every property, the verdict and the violated conditions
    rows = gj.audit.audit_table(task="nbody-dynamics")   # the whole catalogue
"""

from geonorm_jax.audit.cases import (
    CONTEXT_BUILDERS,
    Case,
    make_case,
    perturb_like_trained,
    rng_from_key,
)
from geonorm_jax.audit.core import AuditResult, audit, audit_table, judge
from geonorm_jax.audit.probes import (
    BROKEN_TOL,
    HOLDS_TOL,
    INVARIANCE_PROBES,
    PROBES,
    SYMMETRY_PROBES,
    ProbeResult,
    radial_factors,
    run_probe,
)
from geonorm_jax.audit.report import to_json, to_markdown, to_text
from geonorm_jax.audit.symmetries import TASK_SYMMETRIES, TaskSymmetry, check_match, get_symmetry

__all__ = [
    "AuditResult",
    "audit",
    "audit_table",
    "judge",
    "TaskSymmetry",
    "TASK_SYMMETRIES",
    "get_symmetry",
    "check_match",
    "PROBES",
    "SYMMETRY_PROBES",
    "INVARIANCE_PROBES",
    "HOLDS_TOL",
    "BROKEN_TOL",
    "CONTEXT_BUILDERS",
    "Case",
    "ProbeResult",
    "make_case",
    "perturb_like_trained",
    "run_probe",
    "radial_factors",
    "rng_from_key",
    "to_markdown",
    "to_json",
    "to_text",
]
