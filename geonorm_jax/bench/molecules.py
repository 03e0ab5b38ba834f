r"""One jitted train step of the molecular models (Allegro, SchNet, GemNet-T) on a molecule: time,
memory, parameter count and compile time.

What is measured: one call of a jitted function that does, for a batch of ``B`` frames of one
molecule of ``A`` atoms (float32),

1. the forward pass: molecular energies ``E [B]`` (:func:`~geonorm_jax.models.molecular_graph.
   energy_and_forces`);
2. the forces ``F = -dE/dx [B A, 3]`` by ``jax.grad`` of the summed energies;
3. the loss on energies and forces with the force weight ``w`` (schnetpack's MD17 trade-off,
   ``w = 0.99``)::

       L = (1 - w) mean_b (E_b - E*_b)^2 + w mean_{i,c} (F_ic - F*_ic)^2

4. its gradient with respect to the parameters (a second-order derivative through the
   forces) and one Adam update (``optax.adam``, learning rate ``1e-3``).

Parameters and optimizer state are donated; the graph and the targets are arguments. The
graph is :func:`~geonorm_jax.models.molecular_graph.batch_frames` (every ordered pair of a
molecule's atoms, ``E = B A (A - 1)`` candidate edges, masked to ``r_ij < r_c``), built once
outside the step as a data pipeline would. The targets ``E*``, ``F*`` are seeded Gaussian
noise: they change no cost.

Geometry: the molecule is embedded from SMILES and relaxed with GFN2-xTB
(:func:`~geonorm_jax.data.molecules.structures.build_geometry`, uracil by default, ``A = 12``);
the ``B`` frames are that geometry plus seeded Gaussian displacements of ``noise`` Å per
coordinate. ``relax=False`` skips the xTB relaxation (RDKit's ETKDG geometry; for tests).

Sizes (:data:`SIZES`): ``"published"`` is each model's registry spec (its published defaults),
:data:`~geonorm_jax.models.allegro.ALLEGRO_TUTORIAL` (the Allegro authors' tutorial
configuration: r_c = 5 Å, 8 Bessels, l_max = 1 with both parities, 2 layers, 64 scalar latent
features, 32 tensor channels, two-body MLP 2 x 64, latent MLPs 2 x 128, readout 1 x 32) and
:data:`~geonorm_jax.models.schnet.SCHNET_MD17` (F = 64, 3 interactions, 51 Gaussians, r_c =
5 Å) and :data:`~geonorm_jax.models.gemnet.GEMNET_T_MD17` (the GemNet authors' GemNet-T for
MD17: 4 blocks, atom and edge width 128, triplet 64, bilinear 64, 7 spherical and 6 radial
functions, r_c = 5 Å); ``"tiny"`` is the spec's few-hundred-parameter size for tests. Allegro's
``avg_num_neighbors`` is the mean neighbour count of the batch within ``r_c``; its species
table holds ``Z <= 8`` (H, C, N, O). SchNet's table holds ``Z < 100`` (schnetpack's size) and
sums over neighbours (``neighbor_normalization=False``, as schnetpack 2 does). GemNet-T's
species table holds ``Z <= 8``; its scale factors are fitted on the case's batch before the
step (:func:`~geonorm_jax.models.gemnet_scaling.fit_scale_factors`, not timed) and enter the
step as constants, next to the trained parameters.

Memory: ``peak_rss_gb`` is the process's peak resident memory (``ru_maxrss``, compilation
included; a case's own when it runs in a fresh process, as :func:`run_molecules` does);
``xla_temp_gb``, ``xla_argument_gb``, ``xla_output_gb`` are XLA's compiled-memory figures of
the step (``Compiled.memory_analysis()``), where the backend reports them. ``xla_gflop`` is
XLA's own count of the step's floating-point operations (``Compiled.cost_analysis()``,
second-order derivative included; no formula of this module), and ``gflops_per_s =
xla_gflop / (step_ms_median / 1000)``.

Step time: ``step_ms_best`` and ``step_ms_median`` over the timed repeats (after one untimed
step following compilation); ``compile_s`` is the lowering and compilation of the step.

:func:`serve` runs one case as a line-protocol server on stdin/stdout, so that another
process can interleave its steps with another implementation's (see
``experiments/bench_reference_models.py``).

One module on purpose: the case definitions, the timed step, the worker process and the
server share the same case record and results row.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

__all__ = [
    "SIZES", "PRESETS", "PRECISIONS", "FORCE_WEIGHT", "LEARNING_RATE", "MoleculeCase", "Frames",
    "molecule_frames", "model_kwargs", "build_model", "build_train_step", "CompiledStep",
    "compile_step", "run_molecule_case", "run_molecules", "format_molecules", "serve",
    "set_threads", "main",
]

FORCE_WEIGHT = 0.99
"""``w`` of the loss (the force share; the energy gets ``1 - w``)."""

LEARNING_RATE = 1e-3
"""Adam's learning rate."""

SIZES: tuple[str, ...] = ("published", "tiny")
"""``"published"``: each model's published configuration (its registry spec's defaults);
``"tiny"``: the spec's ``"tiny"`` size (:class:`~geonorm_jax.models.registry.ModelSpec`)."""

PRECISIONS = ("float32", "bfloat16")
"""A case's ``precision``: the ``matmul_dtype`` of the model (None for float32)."""

MODELS = ("allegro", "schnet", "gemnet")
"""The potentials the suite presets benchmark (beside their reference implementations); a case
takes any registered model of the ``molecules`` task."""


@dataclasses.dataclass(frozen=True)
class MoleculeCase:
    """One benchmarked configuration.

    Attributes:
      model: a registered model of the ``molecules`` task (``"allegro"``, ``"schnet"``,
        ``"gemnet"``, ...).
      size: one of :data:`SIZES`.
      molecule: a name of :data:`~geonorm_jax.data.molecules.structures.MOLECULES`.
      batch: ``B`` frames per step.
      relax: relax the geometry with GFN2-xTB (else RDKit's embedding as is).
      noise: standard deviation (Å) of the per-frame displacements.
      seed: seeds the displacements, the targets and the parameters.
      seconds: time budget of the timed steps (at least 2, at most ``max_repeats``).
      max_repeats: most timed steps.
      precision: ``"float32"`` or ``"bfloat16"``: the models' ``matmul_dtype`` (the dense
        layers' operands in bfloat16; sums, energies, forces and the loss in float32).
    """

    model: str
    size: str = "published"
    molecule: str = "uracil"
    batch: int = 8
    relax: bool = True
    noise: float = 0.05
    seed: int = 0
    seconds: float = 10.0
    max_repeats: int = 50
    precision: str = "float32"

    def __post_init__(self):
        from geonorm_jax.models import registry

        if self.model not in registry.names("molecules"):
            raise ValueError(f"model: expected one of {registry.names('molecules')}; received "
                             f"{self.model!r}")
        if self.size not in SIZES:
            raise ValueError(f"size: expected one of {SIZES}; received {self.size!r}")
        if self.batch < 1:
            raise ValueError(f"batch: expected >= 1; received {self.batch}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {PRECISIONS}; received "
                             f"{self.precision!r}")

    @property
    def name(self) -> str:
        name = f"{self.model}-{self.size}-{self.molecule}-b{self.batch}"
        return name if self.precision == "float32" else f"{name}-{self.precision}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS: dict[str, list[MoleculeCase]] = {
    "quick": [MoleculeCase(m, "tiny", "water", 2, relax=False, seconds=0.2, max_repeats=3)
              for m in MODELS],
    "cpu": [MoleculeCase(m, "published", "uracil", 8, seconds=10.0) for m in MODELS],
    "gpu": [MoleculeCase(m, "published", "uracil", 8, seconds=5.0) for m in MODELS],
}
"""Suite preset name -> cases (the ``molecules`` section of ``geonorm-jax bench``)."""


class Frames(NamedTuple):
    """``B`` frames of one molecule and seeded targets (NumPy).

    ``atomic_numbers`` int64 ``[A]``, ``positions`` float64 ``[B, A, 3]`` (Å), ``energies``
    ``[B]`` and ``forces`` ``[B, A, 3]`` (the targets ``E*``, ``F*``), ``avg_num_neighbors``
    (mean count of neighbours within ``cutoff`` per atom, over the batch).
    """

    atomic_numbers: np.ndarray
    positions: np.ndarray
    energies: np.ndarray
    forces: np.ndarray
    avg_num_neighbors: float


def molecule_frames(molecule: str = "uracil", batch: int = 8, *, relax: bool = True,
                    noise: float = 0.05, seed: int = 0, cutoff: float = 5.0) -> Frames:
    """The frames of a case (see the module docstring): geometry + ``N(0, noise^2)`` per
    coordinate; targets ``E* ~ N(0, 1)``, ``F* ~ N(0, 1)``, all from ``seed``."""
    from geonorm_jax.data.molecules import structures

    z, r0 = structures.geometry(molecule, relax)
    rng = np.random.default_rng(seed)
    pos = r0[None] + noise * rng.standard_normal((batch,) + r0.shape)
    d = np.linalg.norm(pos[:, :, None] - pos[:, None], axis=-1)
    a = len(z)
    within = (d < cutoff) & ~np.eye(a, dtype=bool)[None]
    return Frames(np.asarray(z, np.int64), pos, rng.standard_normal(batch),
                  rng.standard_normal(pos.shape), float(within.sum() / (batch * a)))


def model_kwargs(model: str, size: str = "published", avg_num_neighbors: float | None = None,
                 precision: str = "float32") -> dict:
    """The constructor arguments of ``model`` at ``size`` (:meth:`ModelSpec.resolve`), with a
    species table for ``Z <= 8`` and the conventions of the peer implementation where the spec
    names them (its ``"reference"`` size: schnetpack's sum over neighbours and 100-row table);
    ``avg_num_neighbors`` reaches the models that take it; ``precision="bfloat16"`` sets
    ``matmul_dtype``."""
    from geonorm_jax.models import registry

    spec = registry.get(model)
    data = {"max_atomic_number": 8}
    if avg_num_neighbors is not None:
        data["avg_num_neighbors"] = avg_num_neighbors
    kwargs = dict(spec.sizes.get("reference", {}))
    if precision != "float32":
        kwargs["matmul_dtype"] = precision
    return spec.resolve(size=None if size == "published" else size, data=data,
                        model_kwargs=kwargs)


def build_model(model: str, size: str, avg_num_neighbors: float, precision: str = "float32"):
    """The Flax module of a case."""
    from geonorm_jax.models import registry

    return registry.get(model).build(model_kwargs(model, size, avg_num_neighbors, precision))


def build_train_step(model, *, force_weight: float = FORCE_WEIGHT,
                     learning_rate: float = LEARNING_RATE, constants: dict | None = None):
    """``(step, tx)``: ``step(params, opt_state, graph, e_ref [B], f_ref [N, 3]) -> (params,
    opt_state, loss)``, jitted, params and optimizer state donated (see module docstring).
    ``constants``: further variable collections that are not trained (GemNet-T's
    ``scale_factors``), passed to the model beside ``params``."""
    import jax
    import jax.numpy as jnp
    import optax

    from geonorm_jax import xla
    from geonorm_jax.models.molecular_graph import energy_and_forces

    tx = optax.adam(learning_rate)

    def loss_fn(params, graph, e_ref, f_ref):
        e, f = energy_and_forces(model, {"params": params, **(constants or {})}, graph)
        return ((1.0 - force_weight) * jnp.mean(jnp.square(e - e_ref))
                + force_weight * jnp.mean(jnp.square(f - f_ref)))

    def step(params, opt_state, graph, e_ref, f_ref):
        loss, grads = jax.value_and_grad(loss_fn)(params, graph, e_ref, f_ref)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return xla.jit(step, donate_argnums=(0, 1)), tx


def _memory(compiled) -> dict[str, float]:
    try:
        ma = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend reports it
        ma = None
    out = {}
    for key, attr in (("xla_temp_gb", "temp_size_in_bytes"),
                      ("xla_argument_gb", "argument_size_in_bytes"),
                      ("xla_output_gb", "output_size_in_bytes")):
        value = getattr(ma, attr, None) if ma is not None else None
        if value is not None:
            out[key] = value / 1e9
    from geonorm_jax.bench.roofline import compiled_cost

    out.update(compiled_cost(compiled))  # xla_gflop, xla_gbytes
    return out


class CompiledStep(NamedTuple):
    """A compiled step and its state: ``run()`` does one step and returns ``(seconds, loss)``;
    parameters and optimizer state advance with every call. ``param_groups``: parameter count
    per top-level submodule; ``edge_plan``: the model's execution plan
    (``model.edge_plan(graph).describe()``, GemNet-T's triplet sums) or None."""

    run: Callable[[], tuple[float, float]]
    compile_s: float
    params: int
    edges: int
    edges_within_cutoff: int
    memory: dict
    param_groups: dict
    edge_plan: str | None = None


def compile_step(case: MoleculeCase, frames: Frames | None = None) -> CompiledStep:
    """Build the model, the graph and the step of ``case``, compile it (timed), run one
    untimed step; ``frames`` default to :func:`molecule_frames` of the case."""
    import jax
    import jax.numpy as jnp

    from geonorm_jax.models import registry
    from geonorm_jax.models.molecular_graph import batch_frames

    cutoff = registry.get(case.model).cutoff_of(model_kwargs(case.model, case.size))
    if frames is None:
        frames = molecule_frames(case.molecule, case.batch, relax=case.relax, noise=case.noise,
                                 seed=case.seed, cutoff=cutoff)
    model = build_model(case.model, case.size, frames.avg_num_neighbors, case.precision)
    graph = batch_frames(jnp.asarray(frames.positions, jnp.float32),
                         jnp.asarray(frames.atomic_numbers), cutoff)
    e_ref = jnp.asarray(frames.energies, jnp.float32)
    f_ref = jnp.asarray(frames.forces.reshape(-1, 3), jnp.float32)
    spec = registry.get(case.model)
    batch = {"positions": jnp.asarray(frames.positions, jnp.float32),
             "atomic_numbers": jnp.broadcast_to(jnp.asarray(frames.atomic_numbers),
                                                frames.positions.shape[:2])}
    variables = jax.jit(functools.partial(spec.init, model))(jax.random.key(case.seed), batch)
    params = variables["params"]
    step, tx = build_train_step(model, constants=variables["batch_stats"])
    opt_state = tx.init(params)
    n_params = int(sum(x.size for x in jax.tree.leaves(params)))
    groups = {k: int(sum(x.size for x in jax.tree.leaves(v))) for k, v in params.items()}
    t = time.perf_counter()
    compiled = step.lower(params, opt_state, graph, e_ref, f_ref).compile()
    compile_s = time.perf_counter() - t
    state = [params, opt_state]

    def run() -> tuple[float, float]:
        t = time.perf_counter()
        state[0], state[1], loss = compiled(state[0], state[1], graph, e_ref, f_ref)
        loss.block_until_ready()
        return time.perf_counter() - t, float(loss)

    run()
    edges = int(graph.num_edges)
    within = int(jnp.sum(graph.edge_mask))
    plan = model.edge_plan(graph).describe() if hasattr(model, "edge_plan") else None
    return CompiledStep(run, compile_s, n_params, edges, within, _memory(compiled), groups, plan)


def run_molecule_case(case: MoleculeCase) -> dict:
    """Compile and time ``case`` in this process; a row of plain JSON values."""
    import jax

    from geonorm_jax.bench.machine import peak_rss_gb
    from geonorm_jax.bench.roofline import flop_rate

    c = compile_step(case)
    first, loss = c.run()
    repeats = int(min(case.max_repeats, max(2, case.seconds // max(first, 1e-6))))
    times = sorted(c.run()[0] for _ in range(repeats))
    loss = c.run()[1]
    return {
        **case.to_dict(), "name": case.name, "params": c.params, "edges": c.edges,
        "edges_within_cutoff": c.edges_within_cutoff, "edge_plan": c.edge_plan,
        "step_ms_best": 1e3 * times[0], "step_ms_median": 1e3 * times[len(times) // 2],
        "repeats": repeats, "compile_s": c.compile_s, "peak_rss_gb": peak_rss_gb(),
        "gflops_per_s": (flop_rate(c.memory["xla_gflop"], times[len(times) // 2])
                         if "xla_gflop" in c.memory else None),
        **c.memory, "loss": loss, "finite": bool(np.isfinite(loss)),
        "backend": jax.default_backend(),
    }


def _worker(case: MoleculeCase) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "geonorm_jax.bench.molecules", "case",
                           json.dumps(case.to_dict())], capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("ROW "):
            return json.loads(line[4:])
    return {**case.to_dict(), "name": case.name,
            "error": proc.stderr[-1500:] or f"exit status {proc.returncode}"}


def run_molecules(preset: str | list[MoleculeCase], *, subprocesses: bool = True,
                  log: Callable[[str], None] | None = None) -> list[dict]:
    """Time every case of a preset (a key of :data:`PRESETS`, or a list of cases), each in a
    fresh process unless ``subprocesses=False``; returns the rows (failed cases carry
    ``error``)."""
    cases = PRESETS[preset] if isinstance(preset, str) else list(preset)
    rows = []
    for case in cases:
        if subprocesses:
            row = _worker(case)
        else:
            try:
                row = run_molecule_case(case)
            except Exception as e:  # noqa: BLE001 - recorded in the row
                row = {**case.to_dict(), "name": case.name, "error": f"{type(e).__name__}: {e}"}
        rows.append(row)
        if log:
            log(f"  {case.name}: " + (f"{row['step_ms_median']:.1f} ms/step" if
                                      "step_ms_median" in row else "failed"))
    return rows


def format_molecules(rows: list[dict]) -> str:
    """A Markdown table of :func:`run_molecules` rows."""
    lines = ["| case | params | edges (within r_c) | step ms (best / median) | compile s | "
             "peak RSS GB | XLA temp MB | XLA GFLOP (GFLOP/s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "step_ms_best" not in r:
            lines.append(f"| {r.get('name')} | failed: {str(r.get('error'))[-80:]} |")
            continue
        temp = r.get("xla_temp_gb")
        lines.append(
            f"| {r['name']} | {r['params']:,} | {r['edges']} ({r['edges_within_cutoff']}) | "
            f"{r['step_ms_best']:.2f} / {r['step_ms_median']:.2f} | {r['compile_s']:.1f} | "
            f"{r['peak_rss_gb']:.2f} | {'' if temp is None else f'{1e3 * temp:.1f}'} | "
            + (f"{r['xla_gflop']:.3f} ({r['gflops_per_s']:.1f})" if r.get("gflops_per_s")
               else "") + " |")
    return "\n".join(lines)


def set_threads(threads: int | None) -> list[int] | None:
    """Restrict this process to ``threads`` CPUs (the first of its affinity set) and XLA to
    ``threads`` intra-op threads. Call before importing JAX. Returns the CPUs used."""
    if not threads:
        return None
    cpus = sorted(os.sched_getaffinity(0))[:threads]
    os.sched_setaffinity(0, cpus)
    flags = f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} " \
            f"intra_op_parallelism_threads={threads}"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()
    return cpus


def serve(config: dict, stdin=None, stdout=None) -> None:
    """A line protocol on ``stdin``/``stdout`` for interleaved timing by another process.

    ``config``: ``case`` (a :class:`MoleculeCase` dict) and optionally ``frames`` (a ``.npz``
    path with the :class:`Frames` fields). Prints ``READY {json}`` (parameters, edges,
    compile time, XLA memory) after compiling and one untimed step; then, for each input line
    ``RUN k``, does ``k`` steps and prints ``TIMES [seconds, ...]``; on ``QUIT`` prints
    ``DONE {json}`` (peak RSS, last loss, and the best rate of five float32 1024 x 1024
    matmuls on the same threads, measured after the peak RSS) and returns.
    """
    from geonorm_jax.bench.machine import peak_rss_gb

    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    case = MoleculeCase(**config["case"])
    frames = None
    if config.get("frames"):
        with np.load(config["frames"]) as f:
            frames = Frames(f["atomic_numbers"], f["positions"], f["energies"], f["forces"],
                            float(f["avg_num_neighbors"]))
    c = compile_step(case, frames)
    say = lambda text: (stdout.write(text + "\n"), stdout.flush())
    say("READY " + json.dumps({"params": c.params, "edges": c.edges,
                                "edges_within_cutoff": c.edges_within_cutoff,
                                "compile_s": c.compile_s, **c.memory,
                                "param_groups": c.param_groups}))
    loss = float("nan")
    for line in stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "RUN":
            times = []
            for _ in range(int(cmd[1])):
                seconds, loss = c.run()
                times.append(seconds)
            say("TIMES " + json.dumps(times))
        elif cmd[0] == "QUIT":
            break
    from geonorm_jax.bench.machine import MatmulTimer

    matmul = MatmulTimer(1024)
    matmul.sample(5)
    say("DONE " + json.dumps({"peak_rss_gb": peak_rss_gb(), "loss": loss,
                               "matmul_gflops_per_s": matmul.rate / 1e9}))


def main(argv: list[str] | None = None) -> int:
    """``python -m geonorm_jax.bench.molecules case JSON`` (one row, ``ROW {json}``) or
    ``... serve JSON [--threads N]`` (see :func:`serve`)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0] not in ("case", "serve"):
        print("usage: python -m geonorm_jax.bench.molecules case|serve JSON", file=sys.stderr)
        return 2
    payload = json.loads(argv[1])
    if argv[0] == "case":
        print("ROW " + json.dumps(run_molecule_case(MoleculeCase(**payload))), flush=True)
    else:
        set_threads(payload.get("threads"))
        serve(payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
