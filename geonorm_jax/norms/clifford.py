"""A small Clifford (geometric) algebra helper for the multivector normalizations.

:class:`CliffordAlgebra` ``Cl(p, q, r)`` over a diagonal metric ``(m_1, ..., m_n)`` (``e_i^2 =
m_i``, each 1, -1 or 0): its ``2^n`` basis blades ordered by grade, then lexicographically
(``1, e_1, ..., e_n, e_12, e_13, ...``; for ``metric=(0, 1, 1, 1)`` this is GATr's order of
the projective algebra ``G(3, 0, 1)``, ``1, e0, e1, e2, e3, e01, ...``), the grade of every
blade, the quadratic form, the reverse, the geometric product (from the blades' Cayley table)
and the outermorphism of a linear map of the base vectors (how an orthogonal transformation
acts on every grade). Everything is a small NumPy table built once; the maps are ``jnp``
``einsum``/products over the last axis of a multivector array ``[..., 2^n]``.

Quadratic form (CGENN's ``q(x) = <beta(x) x>_0`` with ``beta`` the reversion, for a diagonal
metric): ``q(x) = sum_A eta_A x_A^2`` with ``eta_A = prod_{i in A} m_i``.

Kept here (a module of the ``norms`` package) rather than as a dependency: the layers need a
few tables, not a general algebra library.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from functools import cached_property

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["CliffordAlgebra", "blade_product"]


def blade_product(a: tuple[int, ...], b: tuple[int, ...], metric: Sequence[float]):
    """``e_a e_b = sign * e_c`` for sorted index tuples ``a, b``: returns ``(sign, c)``.

    Concatenates the indices, sorts them by adjacent swaps (each swap flips the sign) and
    contracts equal neighbours ``e_i e_i = m_i``.
    """
    idx = list(a) + list(b)
    sign = 1.0
    # bubble sort, counting transpositions
    for i in range(len(idx)):
        for j in range(len(idx) - 1 - i):
            if idx[j] > idx[j + 1]:
                idx[j], idx[j + 1] = idx[j + 1], idx[j]
                sign = -sign
    out: list[int] = []
    for i in idx:
        if out and out[-1] == i:
            out.pop()
            sign *= metric[i]
        else:
            out.append(i)
    return sign, tuple(out)


@dataclasses.dataclass(frozen=True)
class CliffordAlgebra:
    """The Clifford algebra of a diagonal metric (``metric[i] = e_i^2``).

    Attributes (computed): ``dim`` (``n``), ``size`` (``2^n``), ``blades`` (index tuples),
    ``grades`` (``[2^n]`` ints), ``eta`` (``[2^n]`` quadratic-form signs), ``num_grades``.
    """

    metric: tuple[float, ...] = (1.0, 1.0, 1.0)

    def __post_init__(self):
        m = tuple(float(v) for v in self.metric)
        if not m or any(v not in (-1.0, 0.0, 1.0) for v in m) or len(m) > 6:
            raise ValueError(f"CliffordAlgebra: expected a metric of 1 to 6 entries in "
                             f"{{-1, 0, 1}}; received {self.metric!r}")
        object.__setattr__(self, "metric", m)

    @property
    def dim(self) -> int:
        return len(self.metric)

    @property
    def size(self) -> int:
        return 2 ** self.dim

    @property
    def num_grades(self) -> int:
        return self.dim + 1

    @cached_property
    def blades(self) -> tuple[tuple[int, ...], ...]:
        return tuple(c for k in range(self.dim + 1)
                     for c in itertools.combinations(range(self.dim), k))

    @cached_property
    def grades(self) -> np.ndarray:
        return np.array([len(b) for b in self.blades])

    @cached_property
    def eta(self) -> np.ndarray:
        """``eta_A = prod_{i in A} m_i``: ``q(x) = sum_A eta_A x_A^2``."""
        return np.array([np.prod([self.metric[i] for i in b]) if b else 1.0
                         for b in self.blades])

    def grade_indices(self, k: int) -> np.ndarray:
        """Indices of the grade-``k`` blades."""
        return np.nonzero(self.grades == k)[0]

    @cached_property
    def cayley(self) -> np.ndarray:
        """``[2^n, 2^n, 2^n]`` table ``T[a, b, c]``: ``e_a e_b = sum_c T[a, b, c] e_c``."""
        index = {b: i for i, b in enumerate(self.blades)}
        t = np.zeros((self.size,) * 3)
        for i, a in enumerate(self.blades):
            for j, b in enumerate(self.blades):
                s, c = blade_product(a, b, self.metric)
                t[i, j, index[c]] += s
        return t

    def geometric_product(self, x: jax.Array, y: jax.Array) -> jax.Array:
        """``x y`` for multivectors ``[..., 2^n]``."""
        return jnp.einsum("...a,...b,abc->...c", x, y, jnp.asarray(self.cayley, x.dtype))

    def reverse(self, x: jax.Array) -> jax.Array:
        """Reversion ``~x``: grade ``k`` times ``(-1)^{k(k-1)/2}``."""
        k = self.grades
        return x * jnp.asarray((-1.0) ** (k * (k - 1) // 2), x.dtype)

    def quadratic_form(self, x: jax.Array) -> jax.Array:
        """``q(x) = <~x x>_0 = sum_A eta_A x_A^2`` over the last axis ``[..., 2^n] -> [...]``."""
        return jnp.sum(jnp.asarray(self.eta, x.dtype) * jnp.square(x), axis=-1)

    def outermorphism(self, matrix) -> np.ndarray:
        """``[2^n, 2^n]`` matrix of the outermorphism of ``matrix [n, n]`` (``e_j -> sum_i
        M_ij e_i``): on grade ``k`` the entries are the ``k x k`` minors ``det M[A, B]``.
        ``y = x @ O.T`` transforms a multivector ``x [..., 2^n]``."""
        m = np.asarray(matrix, np.float64)
        if m.shape != (self.dim, self.dim):
            raise ValueError(f"outermorphism: expected a [{self.dim}, {self.dim}] matrix; "
                             f"received shape {m.shape}")
        o = np.zeros((self.size, self.size))
        for i, a in enumerate(self.blades):
            for j, b in enumerate(self.blades):
                if len(a) == len(b):
                    o[i, j] = 1.0 if not a else np.linalg.det(m[np.ix_(a, b)])
        return o
