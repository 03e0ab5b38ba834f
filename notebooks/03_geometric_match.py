# %% [markdown]
# # Geometric match: which normalization layer fits which task
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/geonorm-jax/geonorm-jax/blob/main/notebooks/03_geometric_match.ipynb)
#
# **Run time.** Full mode (FAST off): about 15 minutes on a 2-core CPU runtime (measured: 924 s on a
# busy machine, 891 s of it in the four training runs of the last section, which show a progress
# bar). On a GPU runtime: not measured yet.
#
# The survey *Geometric Considerations for Normalization Layers in Equivariant Neural
# Networks* proposes one principle for choosing a normalization layer: it must be
# **geometrically matched** to the task. This notebook states the definition, measures it
# for every layer of the catalogue, gives the verdicts for two tasks, and ends with a
# worked example of a mismatched layer hurting training.

# %% tags=["install"]
__import__("_setup")  # built notebooks: the install cell of _setup.py

# %% tags=["fast"]
FAST = __import__("_setup").FAST  # built notebooks: the FAST cell of _setup.py

# %%
# %matplotlib inline
import copy
import pathlib
import tempfile

import jax.numpy as jnp
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

import geonorm_jax as gj
from geonorm_jax import audit, train

# %% [markdown]
# ## 1. Definition 3 of the survey
#
# **Definition 1** (*Equivariance and invariance*). If $G$ is a group acting on
# $\mathbb{R}^N$, a function $\psi:\mathbb{R}^N\to\mathbb{R}^N$ is *$G$-equivariant*
# if $\psi(Ax) = A\psi(x)$ for every $A\in G$ and $x\in\mathbb{R}^N$; if instead
# $\psi(Ax) = \psi(x)$, it is *$G$-invariant*.
#
# **Definition 2** (*Task*). A task is a function $\psi^*(X) = y^*$ from a
# representation $X$ of the input data to a target $y^*$ (a class or a regression
# target).
#
# > **Definition 3** (*Geometric match and mismatch*). If a neural network is trained
# > to approximate a task, and that task is equivariant or invariant with respect to a
# > group $G$, then the network is **geometrically matched** to the task if:
# >
# > 1. All of its layers are also equivariant or invariant with respect to that group.
# > 2. None of its layers introduce invariances which are not respected by the task.
# >
# > If either condition is violated, then we say that the network is **geometrically
# > mismatched** to the task.
#
# The survey's four cases are the failures this rules out: BatchNorm couples separate
# molecules (Case 1, the batch is not a group the task has), breaks rotation
# equivariance (Case 2), normalizes angles that carry information (Case 3), and its
# mean subtraction removes task-relevant information (Case 4, an introduced
# invariance).
#
# `geonorm_jax.audit` makes the definition measurable. For each layer it measures,
# on random inputs in float64 with trained-like parameters:
#
# * **symmetries** (condition 1): $\max|F(g\cdot x) - g\cdot F(x)| / \max|g\cdot F(x)|$
#   for rotations, reflections, translations and permutations, plus batch
#   independence (Case 1), padding independence and size consistency;
# * **invariances** (condition 2): the relative output change
#   $\max|F(x') - F(x)|/\max|F(x)|$ when the input is rescaled, shifted, rescaled
#   node by node, or moved radially about its centroid. A change below $10^{-4}$ means
#   the layer discards that quantity.
#
# A `TaskSymmetry` states the groups of the task and the quantities its target depends on.

# %%
for name in ("nbody-dynamics", "molecular-energy"):
    t = audit.TASK_SYMMETRIES[name]
    print(f"{t.name}: {t.description}")
    print(f"  equivariant to {t.equivariant_to}, invariant to {t.invariant_to}")
    print(f"  depends on {t.depends_on}; samples independent: {t.samples_independent},"
          f" variable size: {t.variable_size}, size-extensive: {t.size_extensive}")
    print(f"  source: {t.source}")

# %% [markdown]
# ## 2. The audit table of the catalogue
#
# One row per layer, one column per measured property. In FAST mode only a
# representative subset is audited, on one random input per probe (the legend below
# speaks of three); with `FAST` off, the whole catalogue on three inputs (about a
# minute on 2 CPU cores).

# %%
import time

if FAST:
    names = ["batch_norm", "layer_norm", "instance_norm", "set_norm",
             "mace_avg_neighbor_norm", "vector_neuron_batch_norm", "ev_norm",
             "layer_norm_coords", "scale_norm_l2", "geo_norm", "geo_norm_shared"]
    entries = [gj.norms.get(n) for n in names]
    num_inputs = 1
else:
    entries, num_inputs = gj.CATALOG, 3

t0 = time.perf_counter()
results = audit.audit_table(entries, num_inputs=num_inputs)
print(f"{len(results)} layers audited in {time.perf_counter() - t0:.1f} s")
display(Markdown(audit.to_markdown(results)))
display(Markdown(audit.report.LEGEND))

# %% [markdown]
# ## 3. Verdicts for two tasks
#
# The measurements do not depend on the task; `audit.judge` compares them with one.
# **N-body dynamics** (predict positions): the output is E(3)- and
# permutation-equivariant, and it depends on the scale of the system and on where each
# particle sits. **Molecular energy** (QM9/MD17-style): the output is E(3)- and
# permutation-*invariant*, a sum over atoms (so size-consistent), molecules of
# different sizes share a padded batch.

# %%
tasks = ("nbody-dynamics", "molecular-energy")
lines = ["| layer | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
for r in results:
    cells = []
    for task in tasks:
        j = audit.judge(r, task)
        if j.matched is None:
            cells.append("n/a")
        elif j.matched:
            cells.append("✓ matched")
        else:
            cells.append("✗ " + audit.report.describe_violations(j.violated))
    lines.append(f"| `{r.name}` | " + " | ".join(cells) + " |")
display(Markdown("\n".join(lines)))

# %% [markdown]
# Reading the table:
#
# * **BatchNorm** is mismatched for both: in training mode each sample's output depends
#   on the rest of the batch (Case 1).
# * **ScaleNorm** (`scale_norm_l2`) and **LayerNorm on coordinates** break translation
#   equivariance (and rotation, for LayerNorm): condition 1 fails for N-body.
# * **GeoNorm** keeps rotations, reflections and translations; the paper's per-particle
#   $g_i, b_i$ break permutation equivariance, the shared variant keeps it. Every
#   GeoNorm is invariant to the scale of the system, an invariance the N-body task does
#   not have (condition 2): the scale must be carried by other paths of the network (in
#   EGNN, the invariant features and the edge attributes).
# * A layer matched to one task can be mismatched to the other: size consistency and
#   padding matter for molecules, not for a fixed-size N-body system (in the full
#   table, `graph_size_norm` and `schnet_neighbor_norm` are matched to N-body
#   dynamics but not size-consistent, so mismatched to molecular energy).

# %% [markdown]
# ## 4. Worked example: a mismatched layer hurts training
#
# The N-body task does not care where the origin of the coordinate frame is: moving
# every position (input and target) by the same vector $\mathbf{t}$ gives the same
# physics. A network matched to the task (condition 1) then sees the *same* learning
# problem. ScaleNorm, $F(\mathbf{x}_i) = g\,\mathbf{x}_i/\|\mathbf{x}_i\|$, breaks
# translation equivariance: it rescales about the origin, so moving the origin changes
# what the network computes.
#
# We train EGNN with ScaleNorm (one shared $g$, so the only broken symmetry is
# translation) and with the shared GeoNorm (translation-equivariant), each twice: on
# the data as simulated (centred near the origin), and on the same data moved by
# $\mathbf{t} = (5, 5, 5)$.

# %%
if FAST:
    base = train.merge(train.preset("test"), {"train": {"epochs": 6, "eval_every": 2,
                                                        "checkpoint_every": 6}})
else:
    base = train.merge(train.preset("quick"), {"train": {"epochs": 60,
                                                         "checkpoint_every": 60}})
layers = {
    "ScaleNorm (mismatched: translation)": ("scale_norm_l2", {"per_particle": False}),
    "GeoNorm shared (translation-equivariant)": ("geo_norm_shared", {}),
}
shift = jnp.array([5.0, 5.0, 5.0])
RUNS = pathlib.Path(tempfile.mkdtemp(prefix="geonorm_match_"))

def shifted(split):
    out = dict(split)
    out["loc"] = split["loc"] + shift
    out["target"] = split["target"] + shift
    return out

curves = {}
for label, (norm, kwargs) in layers.items():
    config = train.merge(base, {"model": {"norm": norm, "norm_kwargs": kwargs}})
    s = train.build(config)
    for frame in ("original frame", "frame moved by t"):
        if frame == "frame moved by t":
            # the same compiled functions (copied after the first run compiled
            # them), with every position and target moved by `shift`
            s = copy.copy(s)
            s.data = {k: shifted(v) for k, v in s.data.items()}
        run_dir = RUNS / f"{norm}_{frame.split()[0]}"
        summary = train.train(config, run_dir, setup=s, progress=True)
        records = train.read_metrics(run_dir)
        curves[label, frame] = (
            [r["epoch"] for r in records],
            [r["train_loss"][0] for r in records],
            summary["seeds"][0]["test_mse"],
        )
        print(f"{label:<42} {frame:<18} test MSE {summary['seeds'][0]['test_mse']:.4e}")

# %%
# %matplotlib inline
fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
for ax, label in zip(axes, layers, strict=True):
    for frame, style in (("original frame", "-"), ("frame moved by t", "--")):
        ep, loss, test_mse = curves[label, frame]
        ax.plot(ep, loss, style, marker=".", label=f"{frame} (test MSE {test_mse:.3g})")
    ax.set_yscale("log")
    ax.set_title(label)
    ax.set_xlabel("epoch")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
axes[0].set_ylabel("train loss (MSE)")
plt.tight_layout()
plt.show()

# %% [markdown]
# With GeoNorm the two curves coincide (up to float32 rounding): the network is
# translation-equivariant, so moving the frame changes nothing it learns. With
# ScaleNorm the same physics in a moved frame is a different, harder learning problem:
# every particle is pushed to distance $|g|$ from an origin that now lies far from the
# system, which erases the system's shape, and the loss is worse. This is condition 1
# of Definition 3 at work. Notebook 02's RTE columns measure the same effect on a
# trained model ($\Delta T_{err}$).
