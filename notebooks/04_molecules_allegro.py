# %% [markdown]
# # Allegro on uracil, with and without its normalization
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/geonorm-jax/geonorm-jax/blob/main/notebooks/04_molecules_allegro.ipynb)
#
# **Run time.** Full mode (FAST off) first generates the default uracil data set (2000 GFN2-xTB
# frames; measured 3889 s on a busy 2-core machine, about 30 to 65 minutes on a 2-core runtime,
# cached afterwards), then trains two Allegro models (about 17k parameters, 2 seeds vmapped, 20
# epochs of 125 steps): about 8 minutes on a 2-core CPU runtime, estimated from a measured 3.2 s per
# epoch of 50 steps for 2 seeds. FAST mode takes about a minute (a few water frames). On a GPU
# runtime: not measured yet.
#
# The survey's Section 4 trains **Allegro** (an e3nn tensor-product interatomic
# potential) on uracil, with and without the normalization its authors describe, and
# finds the losses without it many orders of magnitude higher (Figure 1). This notebook
#
# 1. generates molecular-dynamics frames of uracil: Langevin dynamics at 500 K with
#    GFN2-xTB energies and forces (`tblite`), cached;
# 2. trains Allegro (`geonorm_jax.models.Allegro`, on e3nn-jax) twice through the same
#    trainer as the N-body notebooks: **with** its normalizations (per-species energy
#    shift and scale fitted on the training set, `1/sqrt(N̄)` on the environment sums)
#    and **without** them;
# 3. plots both loss curves on a log scale and compares energy and force errors.

# %% tags=["install"]
__import__("_setup")  # built notebooks: the install cell of _setup.py

# %%
# The data generator needs the quantum-chemistry extra (tblite, ase, rdkit).
import importlib.util
import subprocess
import sys

missing = [m for m in ("tblite", "ase", "rdkit") if importlib.util.find_spec(m) is None]
if missing:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing], check=True)

# %% tags=["fast"]
FAST = __import__("_setup").FAST  # built notebooks: the FAST cell of _setup.py

# %%
# %matplotlib inline
import matplotlib.pyplot as plt
import numpy as np

from geonorm_jax import train
from geonorm_jax.data import molecules

if FAST:  # a few water frames from short trajectories, a tiny model
    DATA = molecules.MoleculeConfig(molecule="water", frames=40, trajectories=2,
                                    stride=4, equilibration=6)
    SPLIT = dict(train=16, valid=8, test=16)
    MODEL = dict(hidden=8, num_layers=1, model_kwargs=dict(
        num_channels=2, latent_hidden=[8], two_body_hidden=[8], embed_dim=4,
        edge_energy_hidden=[4]))
    TRAIN = dict(epochs=3, batch_size=4, seeds=[0], eval_every=1,
                 checkpoint_every=3, eval_batch_size=16, fast_compile=True)
else:  # the default uracil data set; rMD17 split; a smaller Allegro, 2 seeds
    DATA = molecules.MoleculeConfig(molecule="uracil", frames=2000)
    SPLIT = dict(train=1000, valid=50, test=500)
    MODEL = dict(hidden=32, num_layers=2, model_kwargs=dict(
        num_channels=8, latent_hidden=[64], two_body_hidden=[64], embed_dim=16,
        edge_energy_hidden=[32]))
    TRAIN = dict(epochs=20, batch_size=8, seeds=[0, 1], eval_every=2,
                 checkpoint_every=2, eval_batch_size=50)

# %% [markdown]
# ## 1. Molecular-dynamics frames
#
# The geometry is built from the molecule's connectivity (RDKit) and relaxed with
# GFN2-xTB; independent Langevin trajectories (500 K, 0.5 fs) run in parallel and
# keep a frame every `stride` steps. Units: Å, eV, eV/Å. The data set is cached
# under a hash of its settings, and a killed generation resumes.

# %%
data_dir = molecules.get_molecular_dataset(DATA, progress=True)
frames = molecules.load_molecular_dataset(data_dir)
print(molecules.describe_molecular_dataset(data_dir))

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), constrained_layout=True)
axes[0].plot(frames.energies - frames.energies.mean(), ".", ms=2)
axes[0].set(xlabel="frame", ylabel="E - mean(E) (eV)", title="energies")
axes[1].hist(frames.forces.reshape(-1), bins=60)
axes[1].set(xlabel="force component (eV/Å)", title="forces")
plt.show()

# %% [markdown]
# ## 2. Allegro with and without its normalization
#
# One configuration differs in two switches only: `molecules.target_norm` (the energy
# of atom *i* is `sigma * E_i + mu_Z`, with `mu_Z` a least-squares fit of the training
# energies on the species counts and `sigma` the training force RMS) and
# `model.builtin_norm` (Allegro's own: `1/sqrt(N̄)` on its environment sums, N̄ the mean
# neighbour count of the training frames; `geonorm-jax models` lists each model's).
# The loss is the per-atom energy MSE plus the force MSE, in eV² and eV²/Å².

# %%
import pathlib
import tempfile

runs = pathlib.Path(tempfile.mkdtemp(prefix="allegro_runs_"))
base = train.merge(train.preset("allegro-uracil"), {
    "molecules": dict(molecule=DATA.molecule, frames=DATA.frames, **SPLIT),
    "model": MODEL, "train": TRAIN})
summaries = {}
for name, on in (("with normalization", True), ("without", False)):
    config = train.merge(base, {"molecules": {"target_norm": on},
                                "model": {"builtin_norm": on}})
    summaries[name] = train.train(config, runs / name.replace(" ", "_"),
                                  data_dir=data_dir)
info = summaries["with normalization"]["task_info"]
print(f"N̄ = {info['avg_num_neighbors']:.2f}, sigma = {info['species_scale']:.3f} "
      f"eV/Å, mean energy {info['energy_mean']:.2f} eV")

# %%
fig, ax = plt.subplots(figsize=(7, 4))
for name, color in zip(summaries, ("tab:blue", "tab:red"), strict=True):
    records = train.read_metrics(runs / name.replace(" ", "_"))
    epochs = [r["epoch"] for r in records]
    evals = [r for r in records if "test_mse" in r]
    ax.plot(epochs, [np.mean(r["train_loss"]) for r in records], color=color,
            label=f"{name}: train")
    ax.plot([r["epoch"] for r in evals], [np.mean(r["test_mse"]) for r in evals],
            "--", color=color, label=f"{name}: test")
ax.set(yscale="log", xlabel="epoch", ylabel="loss (eV², eV²/Å²)",
       title="Allegro on " + DATA.molecule)
ax.legend()
plt.show()

for name, summary in summaries.items():
    e = np.mean([s["test_energy_mae"] for s in summary["seeds"]])
    f = np.mean([s["test_force_mae"] for s in summary["seeds"]])
    print(f"{name:>20}: test energy MAE {e:10.1f} meV, force MAE {f:7.1f} meV/Å")

# %% [markdown]
# ## 3. Reading the result
#
# Without the shift and scale the network must output the raw energy, about -56 eV
# per atom for uracil in GFN2-xTB, from weights initialised for outputs of order 1:
# the loss starts near `(E / A)²`, orders of magnitude above the normalized one,
# and the gap closes only slowly. How many orders depends on the units and on the
# energy zero: the survey's MD17 energies are total DFT energies in kcal/mol,
# whose squares are near 1e11, hence its 11 orders. The experiment
# `python -m experiments.survey_case_studies --preset cpu` separates the two
# normalizations (shift and scale versus `1/sqrt(N̄)`), adds SchNet and a norm zoo
# on Allegro, and states a verdict for each survey claim.
