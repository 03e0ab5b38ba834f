"""What the framework wrappers share: class names, docstrings and ``Norm`` builders generated
from the catalogue, and the example input that fixes the parameter shapes.

:mod:`geonorm_jax.linen` (Flax Linen), :mod:`geonorm_jax.nnx` (Flax NNX) and
:mod:`geonorm_jax.equinox` (Equinox) wrap the same pure ``Norm(init, apply)`` layers. Each
generates its named classes from the catalogue entries (:data:`geonorm_jax.norms.CATALOG`)
with the helpers here, so an entry's paper, formula, reduced axes, symmetries and
hyperparameter defaults are stated once, in the entry:

* :func:`class_name` -- the class name of an entry (``"geo_norm_system"`` ->
  ``"GeoNormSystem"``, acronyms kept: ``"se3_coord_norm"`` -> ``"SE3CoordNorm"``);
* :func:`make_norm` -- the entry's ``Norm`` built from keyword values (lists as tuples);
* :func:`docstring` -- the class docstring (paper, formula, reduced axes, kind, claimed
  symmetries, context, running state, notes, the keyword arguments and their defaults);
* :func:`example_input` -- an example input, or zeros of a given shape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp

from geonorm_jax.norms import catalog
from geonorm_jax.norms.base import Norm

# A private module (no ``__all__``): the wrappers re-export what users see.

#: Words of catalogue names written in capitals (or their usual spelling) in class names.
ACRONYMS: Mapping[str, str] = {
    "e3nn": "E3nn", "ev": "EV", "gatr": "GATr", "gvp": "GVP", "l2": "L2", "mace": "MACE",
    "mv": "MV", "rms": "RMS", "schnet": "SchNet", "se3": "SE3", "sh": "SH",
}
#: Class names that are not the catalogue name in CamelCase.
CLASS_NAMES: Mapping[str, str] = {"vec_layer_norm_maxmin": "VecLayerNorm"}


def class_name(catalogue_name: str) -> str:
    """The class name of a catalogue entry: :data:`CLASS_NAMES`, else the name in CamelCase
    with the words of :data:`ACRONYMS` spelled as there (``"norm_se3"`` -> ``"NormSE3"``)."""
    if catalogue_name in CLASS_NAMES:
        return CLASS_NAMES[catalogue_name]
    return "".join(ACRONYMS.get(w, w.capitalize()) for w in catalogue_name.split("_"))


def has_leaves(tree: Any) -> bool:
    """Whether ``tree`` holds any array (a layer's state may be ``{}``)."""
    return len(jax.tree_util.tree_leaves(tree)) > 0


def as_static(value: Any) -> Any:
    """Lists (and tuples) as tuples: the pure constructors take hashable sequences
    (``metric``, per-type ``avg_num_neighbors``)."""
    return tuple(value) if isinstance(value, list | tuple) else value


def make_norm(info: catalog.NormInfo, values: Mapping[str, Any]) -> Norm:
    """``info.make(**values)`` with sequences as tuples (:func:`as_static`)."""
    return info.make(**{k: as_static(v) for k, v in values.items()})


def docstring(info: catalog.NormInfo, fields: Mapping[str, Any], *, wrapper: str,
              state_where: str, fields_title: str) -> str:
    """The docstring of the class generated for ``info``.

    ``wrapper`` says what the class is (``"a Linen :class:`NormLayer`"``), ``state_where``
    where the running state lives, ``fields_title`` introduces ``fields`` (name -> default).
    """
    ctor = f"geonorm_jax.norms.{info.constructor.__name__}"
    lines = [
        f":func:`{ctor}` as {wrapper} (catalogue entry ``{info.name!r}``).",
        "",
        f"Paper: {info.paper}.",
        f"Formula: {info.formula}. Reduced axes: {info.reduced_axes}. Kind: {info.kind}.",
        f"Claimed symmetries: {', '.join(info.symmetries or ()) or 'none'}.",
    ]
    if info.context:
        lines.append(f"Call with the context {', '.join(f'{k}=' for k in info.context)}.")
    if info.running_state:
        lines.append(f"Running state ({state_where}): {', '.join(info.running_state)}.")
    if info.notes:
        lines += ["", info.notes]
    lines += ["", fields_title]
    lines += [f"  {k}: default ``{v!r}``." for k, v in fields.items()] or ["  none."]
    return "\n".join(lines)


def example_input(x: Any, dtype, who: str) -> Any:
    """``x`` itself (an array or IrrepsArray), or zeros of ``dtype`` when ``x`` is a shape;
    ``ValueError`` naming ``who``, what was expected and what was received otherwise."""
    if isinstance(x, e3nn.IrrepsArray) or hasattr(x, "shape"):
        return x
    if isinstance(x, Sequence) and all(isinstance(d, int) and d >= 0 for d in x):
        return jnp.zeros(tuple(x), dtype)
    raise ValueError(
        f"{who}: expected an example input (an array or e3nn.IrrepsArray in the norm's "
        "layout, e.g. features [batch, nodes, channels]) or its shape as a tuple of ints; "
        f"received {type(x).__name__} {x!r}"
    )
