"""The train step of the PyTorch reference implementations (nequip-allegro's Allegro,
schnetpack's SchNet), served on stdin/stdout for interleaved timing.

Run with the interpreter that has torch, nequip, allegro and schnetpack installed (not this
package's)::

    python torch_train_step.py JSON

``JSON``: ``model`` (``"allegro"`` or ``"schnet"``), ``hyper`` (the hyperparameters, see
:func:`build_allegro` / :func:`build_schnet`), ``frames`` (a ``.npz`` with ``atomic_numbers
[A]``, ``positions [B, A, 3]``, ``energies [B]``, ``forces [B, A, 3]``,
``avg_num_neighbors``), ``threads``, ``seed``, ``learning_rate``, ``force_weight`` and
``compile_mode``: ``"eager"`` (the default) or ``"compile"``. Allegro: nequip's own
train-time ``torch.compile`` (``AllegroModel(compile_mode="compile")``, PyTorch >= 2.6).
SchNet: ``torch.compile(model)`` does not work: schnetpack's forces are an autograd gradient
with ``create_graph=True`` inside the model, so the loss's backward is a double backward
through the compiled graph, which AOTAutograd refuses (``torch.compile with aot_autograd
does not currently support double backward``, PyTorch 2.14). The compiled SchNet step is
instead :func:`schnet_compiled_grads`: schnetpack's own modules without its ``Forces``
module, the forces by ``torch.func.grad`` and the parameter gradient by
``torch.func.grad_and_value``, the whole of it one ``torch.compile`` graph
(``capture_scalar_outputs``, else ``Atomwise``'s ``int(idx_m[-1])`` breaks the graph); the
Adam step is the same as in eager mode. ``READY`` reports its loss beside the eager module's
at the same weights (``loss_check``).

One step, as on the JAX side: energies ``E [B]`` and forces ``F = -dE/dx`` by autograd with
``create_graph=True`` (the references' training mode), the loss
``(1 - w) mean (E - E*)^2 + w mean (F - F*)^2``, ``backward()`` and one ``torch.optim.Adam``
step. The neighbour lists (pairs within ``r_c``) are built once, outside the step. Float32
weights and activations (nequip's ``model_dtype="float32"``; nequip keeps positions and the
summed energies in float64, its design).

Protocol (as :func:`geonorm_jax.bench.molecules.serve`): ``READY {json}`` after building and
one untimed step; ``RUN k`` -> ``TIMES [seconds, ...]``; ``QUIT`` -> ``DONE {json}``.
Prints ``MISSING {json}`` and exits with status 3 if a reference package is not importable,
``FAILED {json}`` (the error's last line) and status 4 if building or the first step fails.

schnetpack 2.0.4 to 2.1.1 import ``T_co`` from ``torch.utils.data.dataloader``, a type
variable PyTorch 2.5 renamed ``_T_co``; :func:`import_schnetpack` puts the old name back
before importing schnetpack (it computes nothing).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

__all__ = ["build_allegro", "build_schnet", "import_schnetpack", "main"]

# the SchNet arguments whose values schnetpack's defaults fix (geonorm_jax.models.schnet's
# SCHNETPACK convention, the peer benchmark's "reference" size)
SCHNETPACK_CONVENTION = dict(neighbor_normalization=False, readout_activation="silu",
                             rbf_gamma=None)


def import_schnetpack():
    """``schnetpack``, imported under PyTorch >= 2.5 too (see the module docstring)."""
    import torch.utils.data.dataloader as dataloader

    if not hasattr(dataloader, "T_co") and hasattr(dataloader, "_T_co"):
        dataloader.T_co = dataloader._T_co
    import schnetpack

    return schnetpack


def _count(model) -> int:
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def _groups(model) -> dict[str, int]:
    """Trainable parameter count per parameter tensor, by its module path."""
    return {name: int(p.numel()) for name, p in model.named_parameters() if p.requires_grad}


def build_allegro(hyper: dict, type_names: list[str], avg_num_neighbors: float, seed: int,
                  compile_mode: str = "eager"):
    """nequip-allegro's ``AllegroModel`` with the JAX model's sizes (``hyper`` holds the JAX
    ``Allegro`` arguments): ``r_max = cutoff``, ``l_max``, ``parity=True`` (the tensor track
    holds both parities up to ``l_max``), ``num_layers``, ``num_scalar_features =
    latent_dim``, ``num_tensor_features = num_channels``, the two-body radial-chemical
    embedding of ``embed_dim`` with ``num_bessel`` Bessels and envelope ``p``, the two-body,
    latent and readout MLPs of the same depths and widths, ``avg_num_neighbors``.
    ``compile_mode``: nequip's ``"eager"`` or ``"compile"`` (train-time ``torch.compile``)."""
    from nequip.utils.global_state import set_global_state

    set_global_state()
    from allegro.model import AllegroModel

    two, lat, out = hyper["two_body_hidden"], hyper["latent_hidden"], \
        hyper["edge_energy_hidden"]
    for name, widths in (("two_body_hidden", two), ("latent_hidden", lat),
                         ("edge_energy_hidden", out)):
        if len(set(widths)) != 1:
            raise ValueError(f"{name}: nequip-allegro's MLPs have one hidden width; {widths}")
    tensor_irreps = {ir.strip() for ir in hyper["tensor_irreps"].split("+")}
    full = {f"{ell}{p}" for ell in range(hyper["l_max"] + 1) for p in "eo"}
    if tensor_irreps != full:
        raise ValueError(f"tensor_irreps {hyper['tensor_irreps']!r}: the reference holds "
                         f"every l <= l_max of both parities")
    return AllegroModel(
        seed=seed, model_dtype="float32", compile_mode=compile_mode, type_names=type_names,
        r_max=hyper["cutoff"],
        l_max=hyper["l_max"], parity=True,
        radial_chemical_embed=dict(_target_="allegro.nn.TwoBodyBesselScalarEmbed",
                                   num_bessels=hyper["num_bessel"], bessel_trainable=False,
                                   polynomial_cutoff_p=hyper["envelope_p"]),
        radial_chemical_embed_dim=hyper["embed_dim"],
        scalar_embed_mlp_hidden_layers_depth=len(two),
        scalar_embed_mlp_hidden_layers_width=two[0],
        num_layers=hyper["num_layers"], num_scalar_features=hyper["latent_dim"],
        num_tensor_features=hyper["num_channels"],
        allegro_mlp_hidden_layers_depth=len(lat), allegro_mlp_hidden_layers_width=lat[0],
        readout_mlp_hidden_layers_depth=len(out), readout_mlp_hidden_layers_width=out[0],
        avg_num_neighbors=avg_num_neighbors,
    )


def build_schnet(hyper: dict):
    """schnetpack's ``SchNet`` representation (``n_atom_basis = n_filters = features``,
    ``n_interactions``, ``GaussianRBF(num_rbf, cutoff)``, ``CosineCutoff(cutoff)``,
    ``max_z = max_atomic_number + 1``) with an ``Atomwise`` energy head (``F -> F/2 -> 1``,
    its default SiLU) and ``Forces``, in a ``NeuralNetworkPotential``. ``hyper`` (the JAX
    ``SchNet`` arguments) must be in schnetpack's conventions (no neighbour mean, SiLU
    readout, Gaussian width = spacing), so both sides compute the same function."""
    spk = import_schnetpack()

    for key, want in SCHNETPACK_CONVENTION.items():
        if hyper.get(key, want) != want:
            raise ValueError(f"SchNet {key}: schnetpack computes {want!r}; received "
                             f"{hyper[key]!r} (use the size 'reference' or 'schnetpack')")
    rep = spk.representation.SchNet(
        n_atom_basis=hyper["features"], n_interactions=hyper["num_interactions"],
        radial_basis=spk.nn.GaussianRBF(n_rbf=hyper["num_rbf"], cutoff=hyper["cutoff"]),
        cutoff_fn=spk.nn.CosineCutoff(hyper["cutoff"]), n_filters=hyper["features"],
        max_z=int(hyper.get("max_atomic_number", 99)) + 1)
    return spk.model.NeuralNetworkPotential(
        representation=rep, input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[spk.atomistic.Atomwise(n_in=hyper["features"], output_key="energy"),
                        spk.atomistic.Forces(energy_key="energy", force_key="forces")])


def _pairs(pos, cutoff):
    """Ordered pairs ``(i, j)``, ``i != j``, ``|x_j - x_i| < cutoff`` of one frame."""
    import numpy as np

    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    i, j = np.nonzero((d < cutoff) & ~np.eye(len(pos), dtype=bool))
    return i, j


def _setup(config: dict):
    """``(model, make_inputs, outputs, n_edges)``: ``outputs(model(make_inputs()))`` gives
    ``(energies [B], forces [N, 3])``; Allegro's ``model`` compiled where ``compile_mode``
    asks (SchNet's compiled step: :func:`schnet_compiled_grads`)."""
    import numpy as np
    import torch

    with np.load(config["frames"]) as f:
        z, pos = f["atomic_numbers"], f["positions"]
        avg = float(f["avg_num_neighbors"])
    b, a, _ = pos.shape
    hyper = config["hyper"]
    cutoff = hyper["cutoff"]
    torch.manual_seed(config.get("seed", 0))
    if config["model"] == "allegro":
        from nequip.data import AtomicDataDict, compute_neighborlist_, from_dict

        species = sorted(set(int(x) for x in z))
        symbols = {1: "H", 6: "C", 7: "N", 8: "O", 9: "F", 16: "S"}
        type_names = [symbols.get(s, f"Z{s}") for s in species]
        types = np.array([species.index(int(x)) for x in z])
        model = build_allegro(hyper, type_names, avg, config.get("seed", 0),
                              config.get("compile_mode", "eager"))
        frames = [compute_neighborlist_(from_dict({"pos": pos[k], "atom_types": types}), cutoff)
                  for k in range(b)]
        batch = AtomicDataDict.batched_from_list(frames)
        n_edges = int(batch["edge_index"].shape[1])
        make = lambda: dict(batch)
        outputs = lambda out: (out["total_energy"].reshape(-1), out["forces"])
    elif config["model"] == "schnet":
        import_schnetpack()
        import schnetpack.properties as P

        model = build_schnet(hyper)
        ii, jj = [], []
        for k in range(b):
            i, j = _pairs(pos[k], cutoff)
            ii.append(i + k * a)
            jj.append(j + k * a)
        idx_i = torch.as_tensor(np.concatenate(ii), dtype=torch.long)
        idx_j = torch.as_tensor(np.concatenate(jj), dtype=torch.long)
        n_edges = int(idx_i.shape[0])
        base = {
            P.Z: torch.as_tensor(np.tile(z, b), dtype=torch.long),
            P.R: torch.as_tensor(pos.reshape(-1, 3), dtype=torch.float32),
            P.idx_m: torch.repeat_interleave(torch.arange(b), a),
            P.idx_i: idx_i, P.idx_j: idx_j,
            P.offsets: torch.zeros((n_edges, 3), dtype=torch.float32),
            P.n_atoms: torch.full((b,), a, dtype=torch.long),
        }
        make = lambda: {k: v.clone() for k, v in base.items()}
        outputs = lambda out: (out["energy"].reshape(-1), out["forces"])
    else:
        raise ValueError(f"model: expected 'allegro' or 'schnet'; received {config['model']!r}")
    return model, make, outputs, n_edges


def schnet_compiled_grads(model, inputs: dict, e_ref, f_ref, force_weight: float):
    """``run() -> (grads {name: tensor}, loss)``: the gradient of the step's loss with respect
    to ``model``'s parameters at their current values, as one ``torch.compile`` graph (see the
    module docstring). ``inputs``: schnetpack's input dict (positions ``R`` included)."""
    import torch
    import torch._dynamo
    from torch.func import functional_call, grad, grad_and_value

    spk = import_schnetpack()
    import schnetpack.properties as P

    torch._dynamo.config.capture_scalar_outputs = True
    energy_model = spk.model.NeuralNetworkPotential(
        representation=model.representation, input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[model.output_modules[0]])
    buffers = dict(energy_model.named_buffers())
    w = float(force_weight)

    def energy(params, positions):
        out = functional_call(energy_model, (params, buffers), ({**inputs, P.R: positions},))
        return out["energy"].sum(), out["energy"]

    def loss_fn(params, positions):
        de_dx, e = grad(energy, argnums=1, has_aux=True)(params, positions)
        return ((1.0 - w) * torch.mean((e.reshape(-1) - e_ref) ** 2)
                + w * torch.mean((-de_dx - f_ref) ** 2))

    compiled = torch.compile(grad_and_value(loss_fn))

    def run():
        params = {n: p.detach() for n, p in energy_model.named_parameters()}
        return compiled(params, inputs[P.R])

    return run


def serve(config: dict) -> None:
    """The protocol loop (see the module docstring)."""
    import numpy as np
    import torch

    threads = config.get("threads")
    if threads:
        torch.set_num_threads(int(threads))
        torch.set_num_interop_threads(1)
    model, make, outputs, n_edges = _setup(config)
    with np.load(config["frames"]) as f:
        e_ref64 = torch.as_tensor(f["energies"])
        f_ref64 = torch.as_tensor(f["forces"].reshape(-1, 3))
    w = float(config.get("force_weight", 0.99))
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=float(config.get("learning_rate", 1e-3)))
    refs = {}

    def eager_loss():
        e, f = outputs(model(make()))
        if e.dtype not in refs:
            refs[e.dtype] = (e_ref64.to(e.dtype), f_ref64.to(f.dtype))
        e_ref, f_ref = refs[e.dtype]
        return (1.0 - w) * torch.mean((e - e_ref) ** 2) + w * torch.mean((f - f_ref) ** 2)

    grads_fn, check = None, {}
    if config["model"] == "schnet" and config.get("compile_mode", "eager") == "compile":
        dtype = next(model.parameters()).dtype
        grads_fn = schnet_compiled_grads(model, make(), e_ref64.to(dtype),
                                         f_ref64.to(dtype), w)
        by_name = dict(model.named_parameters())
        check["eager"] = float(eager_loss().detach())

    def step() -> tuple[float, float]:
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        if grads_fn is None:
            loss = eager_loss()
            loss.backward()
        else:
            grads, loss = grads_fn()
            for name, g in grads.items():
                by_name[name].grad = g
        opt.step()
        return time.perf_counter() - t, float(loss.detach())

    t = time.perf_counter()
    _, loss0 = step()
    first = time.perf_counter() - t
    if check:
        check["compiled"] = loss0
    e, f = outputs(model(make()))
    say = lambda text: print(text, flush=True)
    say("READY " + json.dumps({
        "params": _count(model), "param_groups": _groups(model), "edges": n_edges,
        "edges_within_cutoff": n_edges,
        "first_step_s": first, "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "energy_dtype": str(e.dtype),
        "force_dtype": str(f.dtype),
        "weight_dtypes": sorted({str(p.dtype) for p in model.parameters()}),
        **({"loss_check": check} if check else {})}))
    loss = float("nan")
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "RUN":
            times = []
            for _ in range(int(cmd[1])):
                seconds, loss = step()
                times.append(seconds)
            say("TIMES " + json.dumps(times))
        elif cmd[0] == "QUIT":
            break
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    say("DONE " + json.dumps({"peak_rss_gb": rss, "loss": loss}))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python torch_train_step.py JSON", file=sys.stderr)
        return 2
    config = json.loads(argv[0])
    threads = config.get("threads")
    if threads:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: int(threads)])
    missing = []
    needed = ("torch", "nequip", "allegro") if config["model"] == "allegro" else \
        ("torch", "schnetpack")
    for name in needed:
        try:
            import_schnetpack() if name == "schnetpack" else __import__(name)
        except ImportError as e:
            missing.append(f"{name}: {e}")
    if missing:
        print("MISSING " + json.dumps(missing), flush=True)
        return 3
    try:
        serve(config)
    except Exception as e:  # noqa: BLE001 - reported on the protocol, traceback on stderr
        import traceback

        traceback.print_exc()
        last = str(e).strip().splitlines()[-1] if str(e).strip() else ""
        print("FAILED " + json.dumps(f"{type(e).__name__}: {last}"[:400]), flush=True)
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
