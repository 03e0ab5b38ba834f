r"""One jitted EGNN training step (forward, backward, Adam): time, FLOP rate and memory.

A :class:`ModelCase` names the graph (``dense``: fully connected, ``O(B N^2)`` edges; ``knn``:
edge list of the ``k`` nearest neighbours, ``O(B N k)`` edges), the sizes and whether layers
are rematerialised. :func:`run_case` builds the step for random inputs drawn like the N-body
generator's initial state (positions ``N(0, ((N/5)^{1/3})^2)``, speeds 0.5, charges
:math:`\pm 1`), compiles it and times it, interleaving square matmuls
(:class:`~geonorm_jax.bench.machine.MatmulTimer`) so the step's achieved FLOP rate is compared
with the matmul rate *measured in the same process at the same time*.

FLOPs counted (matrix products only; element-wise work is not counted). A dense layer
``[.., a] x [a, b]`` costs ``2ab`` per row. With hidden size ``H``, ``E`` real edges
(``B N (N-1)`` dense, ``B N k`` kNN) and ``B N`` nodes, one layer's forward pass costs

* per edge: second ``phi_e`` layer ``2H^2``, hidden ``phi_x`` layer ``2H^2``, its output
  ``2H`` (the first ``phi_e`` layer is factorised into per-node products): ``4H^2 + 2H``;
* per node: factorised first ``phi_e`` layer ``2 x 2H^2``, ``phi_v`` ``2H^2 + 2H``,
  ``phi_h`` ``2(2H)H + 2H^2``: ``12H^2 + 2H``;

plus the embedding ``2H`` per node once. A training step counts as three forward passes
(the backward pass of a product costs two products of its size):
``FLOPs = 3 [L (E (4H^2 + 2H) + B N (12H^2 + 2H)) + 2 B N H]``. Recomputation (``remat``,
the chunked edge block) is work the step does but is not counted, so the fraction is a lower
bound on the hardware's utilisation.

XLA's own count (``Compiled.cost_analysis()``: ``xla_gflop``, ``xla_gbytes``) and the
achieved rates against both measured roofs (square matmul FLOP/s, large-array copy bytes/s:
``xla_fraction_of_matmul``, ``xla_fraction_of_copy``, ``bound``, ``roofline_fraction``) are
in :mod:`geonorm_jax.bench.roofline`; XLA counts a chunked step's loop body once, so for
chunked cases the count is that of the same step compiled unchunked (``xla_cost_of``:
``"unchunked twin"``; compiled, never run). ``edge_plan`` records how the EGNN ran its edges
(:mod:`geonorm_jax.models.execution_plan`).

The kNN graph is built once, outside the timed step (as a data pipeline would); its build
time is reported separately (``graph_ms``: ``O(B N^2)`` distances and ``lax.top_k``).

Memory: ``peak_rss_gb`` is the process's peak resident memory (``ru_maxrss``, compilation
included; meaningful per case because the suite runs each case in a fresh process);
``xla_*_gb`` are XLA's compiled-memory figures for the step (``Compiled.memory_analysis()``:
temporaries, arguments, outputs); ``device_peak_gb`` the accelerator's peak bytes in use
(GPU/TPU only).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["ModelCase", "CompiledCase", "PRECISIONS", "step_flops", "step_cost", "run_case",
           "compile_case", "build_step", "case_inputs", "case_model", "edge_plan"]

PRECISIONS = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class ModelCase:
    """One benchmarked configuration.

    Attributes:
      name: row label, e.g. ``"dense-n100-b50-l5"``.
      nodes, batch, layers, hidden: ``N``, ``B``, ``L``, ``H``.
      graph: ``"dense"`` or ``"knn"``.
      neighbors: ``k`` for ``"knn"`` (capped at ``N - 1``).
      remat: rematerialise each layer in the backward pass.
      edge_chunk: the EGNN's edge chunk: ``"auto"`` (the execution plan of
        :mod:`geonorm_jax.models.execution_plan`), edges processed together, or None.
      precision: ``"float32"`` or ``"bfloat16"`` (matrix products' operands in bfloat16,
        accumulation, positions, sums, norms and the loss in float32: the EGNN's
        ``matmul_dtype``).
      norm, norm_place: a catalogue normalization and its place (``None``: vanilla EGNN).
      group: ``"scaling"`` (the N sweep), ``"target"`` (a configuration named by a target).
      seconds: time budget for the timed steps (at least 2 steps, at most ``max_repeats``).
      max_repeats: most timed steps.
    """

    name: str
    nodes: int
    batch: int
    layers: int
    graph: str = "dense"
    neighbors: int | None = None
    hidden: int = 64
    remat: bool = False
    edge_chunk: int | str | None = "auto"
    precision: str = "float32"
    norm: str | None = None
    norm_place: str | None = None
    group: str = "scaling"
    seconds: float = 10.0
    max_repeats: int = 20

    def __post_init__(self):
        if self.graph not in ("dense", "knn"):
            raise ValueError(f"graph: expected 'dense' or 'knn'; received {self.graph!r}")
        if self.graph == "knn" and not (self.neighbors and self.neighbors >= 1):
            raise ValueError(f"graph='knn': expected neighbors >= 1; received {self.neighbors}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {PRECISIONS}; received "
                             f"{self.precision!r}")
        for field in ("nodes", "batch", "layers", "hidden"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field}: expected >= 1; received {getattr(self, field)}")

    @property
    def k(self) -> int | None:
        """Neighbours per node actually used (``min(neighbors, N - 1)``), None for dense."""
        return None if self.graph == "dense" else min(self.neighbors, self.nodes - 1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def step_flops(case: ModelCase) -> float:
    """Matrix-product FLOPs of one training step (see the module docstring)."""
    n, b, h, L = case.nodes, case.batch, case.hidden, case.layers
    per_node = case.k if case.graph == "knn" else n - 1
    edges, nodes = b * n * per_node, b * n
    forward = L * (edges * (4 * h * h + 2 * h) + nodes * (12 * h * h + 2 * h)) + 2 * nodes * h
    return 3.0 * forward


def case_inputs(case: ModelCase, key=None) -> dict:
    """Inputs drawn like the generator's initial state, float32: x, v, q, target."""
    import jax
    import jax.numpy as jnp

    key = jax.random.key(0) if key is None else key
    kx, kv, kq, kt = jax.random.split(key, 4)
    b, n = case.batch, case.nodes
    x = (n / 5) ** (1 / 3) * jax.random.normal(kx, (b, n, 3), jnp.float32)
    v = jax.random.normal(kv, (b, n, 3), jnp.float32)
    v = 0.5 * v / jnp.linalg.norm(v, axis=-1, keepdims=True)
    q = jnp.where(jax.random.bernoulli(kq, 0.5, (b, n, 1)), 1.0, -1.0).astype(jnp.float32)
    target = x + 0.1 * jax.random.normal(kt, (b, n, 3), jnp.float32)
    return dict(x=x, v=v, q=q, target=target)


def case_model(case: ModelCase):
    """The :class:`~geonorm_jax.models.EGNN` of ``case`` (ValueError if the norm cannot be
    placed)."""
    import jax.numpy as jnp

    from geonorm_jax.models import EGNN, make_egnn
    from geonorm_jax.norms import catalog

    kwargs = dict(hidden=case.hidden, num_layers=case.layers, remat=case.remat,
                  edge_chunk=case.edge_chunk, graph="edges" if case.graph == "knn" else "dense",
                  matmul_dtype=jnp.bfloat16 if case.precision == "bfloat16" else None)
    if case.norm is None:
        return make_egnn(None, **kwargs)
    place = case.norm_place or EGNN.placement.default_place(
        catalog.get(case.norm).kind, case.norm
    )
    return make_egnn(case.norm, place=place, **kwargs)


def edge_plan(case: ModelCase):
    """The :class:`~geonorm_jax.models.execution_plan.EdgePlan` the case's EGNN runs with
    (dense: ``B N^2`` padded edges in chunks of whole graphs or receiver rows; kNN: ``B N k``
    edges)."""
    import jax.numpy as jnp

    model = case_model(case)
    if case.graph == "dense":
        return model.edge_plan(case.batch * case.nodes**2, jnp.float32, nodes=case.nodes)
    return model.edge_plan(case.batch * case.nodes * case.k, jnp.float32)


def build_step(case: ModelCase, inputs: dict):
    """``(step, params, opt_state, edges, graph_ms)``: a jitted Adam step on the MSE loss.

    ``step(params, opt_state, x, v, q, target, edges) -> (params, opt_state, loss)``; params
    and optimizer state are donated. Raises ``ValueError`` if the norm cannot be placed.
    """
    import jax
    import jax.numpy as jnp
    import optax

    from geonorm_jax import xla
    from geonorm_jax.models import knn_graph

    x, v, q = inputs["x"], inputs["v"], inputs["q"]
    edges, graph_ms = {}, None
    if case.graph == "knn":
        build = jax.jit(knn_graph, static_argnums=1)
        jax.block_until_ready(build(x, case.k))
        t = time.perf_counter()
        s, r, e = jax.block_until_ready(build(x, case.k))
        graph_ms = 1e3 * (time.perf_counter() - t)
        edges = dict(senders=s, receivers=r, edge_mask=e)
    model = case_model(case)
    variables = jax.jit(lambda key: model.init(key, x, v, q, **edges))(jax.random.key(1))
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    tx = optax.adam(5e-4)
    opt_state = (tx.init(params), batch_stats)

    def loss_fn(params, batch_stats, x, v, q, target, edges):
        pred, updates = model.apply({"params": params, "batch_stats": batch_stats}, x, v, q,
                                    training=True, mutable=["batch_stats"], **edges)
        loss = jnp.mean(jnp.square(pred.astype(jnp.float32) - target))  # float32 loss
        return loss, updates.get("batch_stats", batch_stats)

    def step(params, opt_state, x, v, q, target, edges):
        adam_state, batch_stats = opt_state
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, batch_stats, x, v, q, target, edges)
        updates, adam_state = tx.update(grads, adam_state, params)
        return optax.apply_updates(params, updates), (adam_state, batch_stats), loss

    return xla.jit(step, donate_argnums=(0, 1)), params, opt_state, edges, graph_ms


def _memory(compiled) -> dict[str, Any]:
    try:
        ma = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend reports it
        ma = None
    if ma is None:
        return {}
    get = lambda name: getattr(ma, name, None)
    out = {}
    for key, attr in (("xla_temp_gb", "temp_size_in_bytes"),
                      ("xla_argument_gb", "argument_size_in_bytes"),
                      ("xla_output_gb", "output_size_in_bytes")):
        if get(attr) is not None:
            out[key] = get(attr) / 1e9
    return out


class CompiledCase(NamedTuple):
    """A compiled step of one case and its state: ``run()`` does one step and returns
    ``(seconds, loss)``; the parameters and optimizer state advance with every call."""

    run: Callable[[], tuple[float, Any]]
    compiled: Any
    compile_s: float
    graph_ms: float | None


def compile_case(case: ModelCase) -> CompiledCase:
    """Build inputs and the step of ``case``, compile it (timed) and hold its state."""
    inputs = case_inputs(case)
    step, params, opt_state, edges, graph_ms = build_step(case, inputs)
    args = (inputs["x"], inputs["v"], inputs["q"], inputs["target"], edges)
    t = time.perf_counter()
    compiled = step.lower(params, opt_state, *args).compile()
    compile_s = time.perf_counter() - t
    state = [params, opt_state]

    def run() -> tuple[float, Any]:
        t = time.perf_counter()
        state[0], state[1], loss = compiled(state[0], state[1], *args)
        loss.block_until_ready()
        return time.perf_counter() - t, loss

    return CompiledCase(run, compiled, compile_s, graph_ms)


def step_cost(case: ModelCase, compiled, plan) -> dict:
    """XLA's cost of one step of ``case`` (:func:`~geonorm_jax.bench.roofline.compiled_cost`)
    and ``xla_cost_of``: ``"step"``, or for a chunked step ``"unchunked twin"``: XLA counts
    a loop body once, so the FLOPs and bytes of a chunked step are those of the same step
    compiled unchunked (compiled only, never run: no memory is allocated for it). The
    twin does not count the chunks' recomputation, so its rates are those of the work."""
    from geonorm_jax.bench.roofline import compiled_cost

    if plan.chunk is None:
        return {**compiled_cost(compiled), "xla_cost_of": "step"}
    twin = dataclasses.replace(case, edge_chunk=None)
    inputs = case_inputs(twin)
    step, params, opt_state, edges, _ = build_step(twin, inputs)
    args = (inputs["x"], inputs["v"], inputs["q"], inputs["target"], edges)
    return {**compiled_cost(step.lower(params, opt_state, *args).compile()),
            "xla_cost_of": "unchunked twin"}


def run_case(case: ModelCase, matmul=None, copy=None) -> dict:
    """Compile and time ``case``; returns a row of plain JSON values (see module docstring).

    ``matmul``, ``copy``: a :class:`~geonorm_jax.bench.machine.MatmulTimer` and a
    :class:`~geonorm_jax.bench.machine.CopyTimer` to sample between steps (made if None):
    the two roofs of :func:`~geonorm_jax.bench.roofline.roofline`.
    """
    import jax

    from geonorm_jax.bench.machine import CopyTimer, MatmulTimer, device_peak_gb, peak_rss_gb
    from geonorm_jax.bench.roofline import roofline

    matmul = matmul or MatmulTimer()
    copy = copy or CopyTimer()
    plan = edge_plan(case)
    c = compile_case(case)
    compile_s, graph_ms, memory = c.compile_s, c.graph_ms, _memory(c.compiled)
    first, loss = c.run()
    repeats = int(min(case.max_repeats, max(2, case.seconds // max(first, 1e-6))))
    times = []
    for _ in range(repeats):
        matmul.sample(2)
        copy.sample(1)
        seconds, loss = c.run()
        times.append(seconds)
    matmul.sample(2)
    copy.sample(2)
    flops = step_flops(case)
    cost = step_cost(case, c.compiled, plan)
    best = min(times)
    times.sort()
    return {
        **case.to_dict(),
        "k": case.k,
        "edges": case.batch * case.nodes * (case.k if case.k is not None else case.nodes - 1),
        "step_ms_best": 1e3 * best,
        "step_ms_median": 1e3 * times[len(times) // 2],
        "repeats": repeats,
        "compile_s": compile_s,
        "graph_ms": graph_ms,
        "step_gflop": flops / 1e9,
        "step_gflops_per_s": flops / best / 1e9,
        "matmul_gflops_per_s": matmul.rate / 1e9,
        "fraction_of_matmul": flops / best / matmul.rate,
        "copy_gbytes_per_s": copy.rate / 1e9,
        **cost,
        **roofline(cost, best, matmul.rate, copy.rate),
        "edge_plan": plan.describe(),
        "edge_plan_chunk": plan.chunk,
        "peak_rss_gb": peak_rss_gb(),
        "device_peak_gb": device_peak_gb(),
        **memory,
        "loss": float(loss),
        "finite": bool(jax.numpy.isfinite(loss)),
    }
