r"""How the per-edge work of a model runs: all at once or in chunks (``edge_chunk="auto"``).

The edge block of a message-passing layer (the EGNN's ``phi_e``/``phi_x`` on every edge,
GemNet-T's triplets) holds ``[E, H]`` intermediates. Run unchunked,
a training step keeps those of every layer until the backward pass; run in chunks
(``lax.map``/``lax.scan`` over ``jax.checkpoint``), it holds one chunk at a time and recomputes
the chunk in the backward pass, at the price of a sequential loop of small products.

:func:`plan_edges` decides, at trace time (the shapes are static), from

* the backend (``jax.default_backend()``): on an accelerator, a sequential loop of small
  chunks leaves the device mostly idle, so the plan runs unchunked whenever it fits and
  otherwise takes the *largest* chunk that fits; on the CPU, cache-sized chunks of
  :data:`CPU_CHUNK` edges are faster than one large block (and need far less memory), so the
  plan chunks when there are more than :data:`CPU_WHOLE` edges;
* the memory available: ``bytes_limit - bytes_in_use`` of ``device.memory_stats()`` where the
  device reports it (GPU, TPU), otherwise a stated budget (:data:`DEFAULT_BUDGET_BYTES`),
  overridable by the ``budget_bytes`` argument or the environment variable
  ``GEONORM_JAX_MEMORY_BUDGET_GB``; the plan uses :data:`BUDGET_FRACTION` of it;
* the estimated temporary bytes per edge (:func:`edge_bytes`): ``(c H + c_0)`` elements
  per edge and per live layer, ``c`` counting the ``[E, H]`` intermediates kept for (or made
  by) the backward pass of one layer's edge block.

Estimated unchunked memory: ``E * edge_bytes * live_layers`` (``live_layers = L``, or 1 when
the layers are rematerialised); chunked: ``chunk * edge_bytes`` (one chunk of one layer).

What a chunk keeps for the backward pass (:attr:`EdgePlan.save_dots`): by default a chunk
runs under ``jax.checkpoint`` and its whole forward pass is recomputed in the backward pass
(two of the eight ``[E, H] x [H, H]`` products of the EGNN's edge block are recomputation).
On an accelerator, where the stacked outputs of the chunks' matrix products (:func:`dot_bytes`
per edge and layer, about ``2 H`` values) fit the budget, the plan saves them instead
(``jax.checkpoint_policies.dots_with_no_batch_dims_saveable``) and only the element-wise work
is recomputed. On the CPU it never does: writing those outputs to memory and reading them back
cost more than recomputing the products from cache.

CPU measurements behind the constants (2-core AMD EPYC, jax 0.10.2, EGNN training step at
N = 100, B = 50, L = 5, H = 64, float32, compiled by :func:`geonorm_jax.xla.jit`; each a fresh
process, two rounds): chunks of 5000 edges (50 receiver rows) 2.22 / 2.34 s; 10^4 (one graph)
2.38 / 2.47 s; 2000 2.59 / 2.63 s; 2 x 10^4 2.93 s; unchunked 4.50 s; with the products saved
every chunk size ran 0.15-0.2 s slower than recomputed.

GemNet-T's triplet sums (:func:`~geonorm_jax.models.gemnet_triplets.triplet_sums`) use the
same planner with ``2 M T`` values per edge (``GemNetT.edge_plan``); Allegro's and SchNet's
per-edge blocks are not chunked (they live inside Flax modules with parameters).

The returned :class:`EdgePlan` says what was chosen and why (``geonorm-jax bench`` prints
it). Explicit chunk sizes (``int``) and ``None`` (unchunked) bypass the planner; with an
explicit chunk the products are recomputed unless ``save_dots`` says otherwise.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

__all__ = [
    "AUTO",
    "CPU_CHUNK",
    "CPU_WHOLE",
    "DEFAULT_BUDGET_BYTES",
    "BUDGET_FRACTION",
    "BUDGET_ENV",
    "EdgePlan",
    "available_bytes",
    "edge_bytes",
    "dot_bytes",
    "plan_edges",
    "resolve_chunk",
    "check_edge_chunk",
    "checkpointed",
    "chunked",
]

AUTO = "auto"
#: Edges per chunk on the CPU (2 MiB of float32 ``[chunk, 64]`` per intermediate: a few of
#: them stay in the last-level cache); a dense graph's chunk is rounded down to whole receiver
#: rows (N = 100: 50 rows, 5000 edges). See the module docstring for the measurements.
CPU_CHUNK = 8192
#: Edges up to which the CPU runs unchunked: a loop of a few chunks gains no cache locality
#: and costs the element-wise recomputation (N = 5, B = 100: 2500 edges).
CPU_WHOLE = 16384
#: The budget where the device does not report its memory (the CPU): 4 GiB.
DEFAULT_BUDGET_BYTES = 4 * 2**30
#: The share of the available memory the edge block may use.
BUDGET_FRACTION = 0.5
BUDGET_ENV = "GEONORM_JAX_MEMORY_BUDGET_GB"
#: The smallest chunk the planner picks on an accelerator.
MIN_CHUNK = 1024


class EdgePlan(NamedTuple):
    """The planner's choice.

    Attributes:
      chunk: edges per chunk, or None (unchunked: all edges at once).
      num_edges: edges of one layer (padded dense ``B N^2`` or the edge list's ``E``).
      edge_bytes: estimated temporary bytes per edge and live layer.
      live_layers: layers whose edge intermediates live together when unchunked.
      budget_bytes: the memory the edge block may use (``BUDGET_FRACTION`` of the available).
      memory_source: ``"device"`` (``memory_stats``), ``"argument"``, ``"environment"`` or
        ``"default"``.
      backend: the JAX backend the plan is for.
      reason: one line saying why.
      save_dots: chunked only: keep the chunks' matrix-product outputs for the backward
        pass (recompute only element-wise work) instead of recomputing each chunk in full.
    """

    chunk: int | None
    num_edges: int
    edge_bytes: int
    live_layers: int
    budget_bytes: int
    memory_source: str
    backend: str
    reason: str
    save_dots: bool = False

    @property
    def num_chunks(self) -> int:
        """Chunks per layer (1 when unchunked)."""
        return 1 if self.chunk is None else -(-self.num_edges // self.chunk)

    def describe(self) -> str:
        """``"unchunked"`` or ``"chunks of C edges (K per layer)"``, with the reason."""
        what = ("unchunked" if self.chunk is None
                else f"chunks of {self.chunk} edges ({self.num_chunks} per layer, "
                     f"{'products saved' if self.save_dots else 'recomputed'})")
        return f"{what}: {self.reason}"

    def to_dict(self) -> dict:
        return {**self._asdict(), "num_chunks": self.num_chunks}


def check_edge_chunk(edge_chunk, name: str = "edge_chunk") -> None:
    """ValueError (naming ``name``) unless ``edge_chunk`` is ``"auto"``, None or an integer
    >= 1."""
    ok = edge_chunk is None or edge_chunk == AUTO or (
        isinstance(edge_chunk, int | np.integer) and not isinstance(edge_chunk, bool)
        and edge_chunk >= 1)
    if not ok:
        raise ValueError(f"{name}: expected 'auto', None or an integer >= 1; received "
                         f"{edge_chunk!r}")


def available_bytes(budget_bytes: int | None = None, device=None) -> tuple[int, str]:
    """``(bytes, source)``: the memory the plan may draw on.

    ``budget_bytes`` (if given) wins; then ``bytes_limit - bytes_in_use`` of the device's
    ``memory_stats()``; then ``GEONORM_JAX_MEMORY_BUDGET_GB``; then
    :data:`DEFAULT_BUDGET_BYTES`.
    """
    import jax

    if budget_bytes is not None:
        if budget_bytes <= 0:
            raise ValueError(f"budget_bytes: expected > 0; received {budget_bytes}")
        return int(budget_bytes), "argument"
    env = os.environ.get(BUDGET_ENV)
    if env:
        try:
            gb = float(env)
        except ValueError:
            gb = -1.0
        if not gb > 0:
            raise ValueError(f"{BUDGET_ENV}: expected a positive number of GB; received {env!r}")
        return int(gb * 2**30), "environment"
    device = device or jax.local_devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - not every backend reports memory
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0)), "device"
    return DEFAULT_BUDGET_BYTES, "default"


def edge_bytes(hidden: int, itemsize: int, *, per_hidden: int = 12, extra: int = 16) -> int:
    """Estimated temporary bytes per edge of one layer's training step:
    ``(per_hidden H + extra) itemsize``.

    The EGNN's edge block keeps about six ``[E, H]`` tensors for the backward pass (the
    first-layer pre-activation and its SiLU, the message before and after its SiLU, the
    coordinate MLP's hidden layer before and after its SiLU) and makes about six more while
    differentiating; ``extra`` covers the ``[E, 3]`` differences, the radial term, ``phi_x``,
    the clamped update and the mask. Calibrated on XLA's CPU memory analysis of the
    ``N = 100, B = 50, L = 5, H = 64`` training step: 7.19 GB of temporaries unchunked, i.e.
    ``2876`` bytes = ``11.2 H`` float32 per edge and layer; ``13 H`` per edge of one chunk.
    """
    return int((per_hidden * hidden + extra) * itemsize)


def dot_bytes(hidden: int, itemsize: int) -> int:
    """Bytes per edge and layer of the edge block's saved matrix-product outputs
    (:attr:`EdgePlan.save_dots`): ``phi_e``'s second layer and ``phi_x``'s hidden layer
    (``H`` each), ``phi_x``'s output and the attention logit (1 each): ``(2 H + 2) itemsize``."""
    return int((2 * hidden + 2) * itemsize)


def plan_edges(num_edges: int, hidden: int, dtype, *, layers: int = 1, remat: bool = False,
               backend: str | None = None, budget_bytes: int | None = None,
               per_hidden: int = 12, cpu_chunk: int = CPU_CHUNK, granule: int = 1) -> EdgePlan:
    """Choose unchunked or a chunk size for ``num_edges`` edges of width ``hidden``.

    Args:
      num_edges: edges of one layer (static).
      hidden: the edge block's width ``H``.
      dtype: the computation dtype (its item size enters the estimate).
      layers: layers whose edge intermediates live together when unchunked (``L``).
      remat: the layers are rematerialised (then one layer's intermediates live at a time).
      backend: ``"cpu"``, ``"gpu"``, ``"tpu"``; default ``jax.default_backend()``.
      budget_bytes: override the memory the plan may draw on (see :func:`available_bytes`).
      per_hidden: ``[E, H]`` intermediates per edge (see :func:`edge_bytes`).
      cpu_chunk: the CPU's chunk size.
      granule: chunks are whole multiples of this many edges (a dense graph's ``N``: the
        dense kernels chunk over whole receiver rows), at least one granule.

    Returns:
      an :class:`EdgePlan`.
    """
    if num_edges < 0 or hidden < 1 or granule < 1:
        raise ValueError(f"expected num_edges >= 0, hidden >= 1 and granule >= 1; received "
                         f"{num_edges}, {hidden}, {granule}")
    plan = _plan(num_edges, hidden, dtype, layers, remat, backend, budget_bytes, per_hidden,
                 cpu_chunk)
    if plan.chunk is None or granule == 1:
        return plan
    chunk = max(granule, plan.chunk // granule * granule)
    return plan._replace(chunk=None if chunk >= num_edges else chunk,
                         save_dots=plan.save_dots and chunk < num_edges)


def resolve_chunk(edge_chunk, num_edges: int, hidden: int, dtype, *, save_dots: bool = False,
                  **kwargs) -> tuple[int | None, bool]:
    """``(chunk, save_dots)``: ``edge_chunk`` and ``save_dots`` themselves, or for
    ``"auto"`` those of :func:`plan_edges` (one layer)."""
    check_edge_chunk(edge_chunk)
    if edge_chunk != AUTO:
        return edge_chunk, save_dots
    plan = plan_edges(num_edges, hidden, dtype, **kwargs)
    return plan.chunk, plan.save_dots


def _plan(num_edges, hidden, dtype, layers, remat, backend, budget_bytes, per_hidden,
          cpu_chunk) -> EdgePlan:
    import jax

    backend = backend or jax.default_backend()
    available, source = available_bytes(budget_bytes)
    budget = int(BUDGET_FRACTION * available)
    per_edge = edge_bytes(hidden, np.dtype(dtype).itemsize, per_hidden=per_hidden)
    live = 1 if remat else max(1, layers)
    whole = num_edges * per_edge * live
    fields = dict(num_edges=num_edges, edge_bytes=per_edge, live_layers=live,
                  budget_bytes=budget, memory_source=source, backend=backend)
    gib = lambda b: f"{b / 2**30:.2f} GiB"
    saved = num_edges * dot_bytes(hidden, np.dtype(dtype).itemsize) * live
    if backend == "cpu":
        chunk = min(cpu_chunk, max(1, budget // per_edge))
        if num_edges <= max(chunk, min(CPU_WHOLE, budget // per_edge)):
            return EdgePlan(None, reason=f"CPU: {num_edges} edges are few enough to run at "
                                         f"once (<= {CPU_WHOLE})", **fields)
        return EdgePlan(chunk, reason=f"CPU: cache-sized chunks recomputed in the backward "
                                      f"pass are faster than one block (unchunked would need "
                                      f"~{gib(whole)})", **fields)
    if whole <= budget:
        return EdgePlan(None, reason=f"{backend}: ~{gib(whole)} of edge intermediates fit "
                                     f"{gib(budget)} ({source} memory)", **fields)
    # one chunk of one layer; at least two chunks (one chunk runs without jax.checkpoint)
    fit = max(1, min(budget // per_edge, num_edges // 2))
    chunk = min(num_edges, max(min(MIN_CHUNK, num_edges), 1 << int(np.log2(fit))))
    save = not remat and saved + chunk * per_edge <= budget
    return EdgePlan(chunk, save_dots=save,
                    reason=f"{backend}: unchunked needs ~{gib(whole)} > {gib(budget)} "
                           f"({source} memory); the largest power-of-two chunk that fits; "
                           f"saved products ~{gib(saved)} {'fit' if save else 'do not fit'}",
                    **fields)


def checkpointed(fn, save_dots: bool):
    """``jax.checkpoint(fn)``; with ``save_dots`` the outputs of its matrix products (without
    batch dimensions) are saved and only the rest is recomputed."""
    import jax

    policy = jax.checkpoint_policies.dots_with_no_batch_dims_saveable if save_dots else None
    return jax.checkpoint(fn, policy=policy)


def chunked(fn, xs, num_chunks: int, save_dots: bool = False):
    """``fn(xs)`` stacked over ``num_chunks`` chunks of the leading axis.

    With one chunk this is ``fn(xs)``. Otherwise ``lax.map`` runs ``jax.checkpoint(fn)`` on
    each chunk: the backward pass recomputes one chunk's edge tensors at a time, so memory
    holds only one chunk of ``[edges, H]`` intermediates (with ``save_dots``, plus the
    stacked outputs of every chunk's matrix products, which are not recomputed).
    """
    import jax

    if num_chunks == 1:
        return fn(xs)
    split = lambda a: a.reshape((num_chunks, a.shape[0] // num_chunks) + a.shape[1:])
    out = jax.lax.map(checkpointed(fn, save_dots), jax.tree_util.tree_map(split, xs))
    return jax.tree_util.tree_map(lambda a: a.reshape((-1,) + a.shape[2:]), out)
