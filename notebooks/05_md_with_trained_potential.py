# %% [markdown]
# # MD with a trained potential
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/geonorm-jax/geonorm-jax/blob/main/notebooks/05_md_with_trained_potential.ipynb)
#
# **Run time.** Full mode (FAST off) first generates the default uracil data set (2000 GFN2-xTB
# frames; measured 3889 s on a busy 2-core machine, cached afterwards and shared with notebook
# 04), then trains one Allegro (about 17k parameters, one seed, 20 epochs of 125 steps: about 5
# minutes on a 2-core CPU runtime, estimated from notebook 04's measured 3.2 s per epoch of 50
# steps for 2 seeds) and runs 4 replicas x 5 ps of Langevin MD (10 000 steps; a few minutes on
# 2 cores, not measured end to end). FAST mode takes about a minute (a few water frames, a tiny
# model, 200 MD steps). On a GPU runtime: not measured yet.
#
# A trained interatomic potential is used in three ways here, one model throughout:
#
# 1. train Allegro on GFN2-xTB frames through the same trainer as the other notebooks
#    (`geonorm_jax.train.train`, task `molecules`);
# 2. load its best parameters with `geonorm_jax.potentials.load_potential`: a jitted
#    energy-and-forces function of positions;
# 3. run molecular dynamics **in JAX** (`geonorm_jax.potentials.simulate`: the whole trajectory
#    one jitted `lax.scan`, vmapped over replicas; Langevin BAOAB at 500 K), and check it the way
#    Fu et al. (*Forces are not Enough*, TMLR 2023) do: total and potential energy, temperature,
#    the distance histogram h(r) against the reference frames, and the time to instability;
# 4. hand the same potential to ASE (`GeonormCalculator`): a single point, a BFGS relaxation and
#    a short `ase.md` run.
#
# `python -m experiments.md_stability --preset cpu` asks the survey's question in MD: does
# normalization keep MD stable beyond what the force MAE says?

# %% tags=["install"]
__import__("_setup")  # built notebooks: the install cell of _setup.py

# %%
# The data generator and the calculator need the quantum-chemistry extra (tblite, ase, rdkit).
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

if FAST:  # a few water frames from short trajectories, a tiny model, 200 MD steps
    DATA = molecules.MoleculeConfig(molecule="water", frames=40, trajectories=2,
                                    stride=4, equilibration=6)
    SPLIT = dict(train=16, valid=8, test=16)
    MODEL = dict(hidden=8, num_layers=1, model_kwargs=dict(
        num_channels=2, latent_hidden=[8], two_body_hidden=[8], embed_dim=4,
        edge_energy_hidden=[4]))
    TRAIN = dict(epochs=3, batch_size=4, seeds=[0], eval_every=1,
                 checkpoint_every=3, eval_batch_size=16, fast_compile=True)
    MD = dict(replicas=2, steps=200, record_every=10)
else:  # the default uracil data set; rMD17 split; a smaller Allegro; 4 x 5 ps of MD
    DATA = molecules.MoleculeConfig(molecule="uracil", frames=2000)
    SPLIT = dict(train=1000, valid=50, test=500)
    MODEL = dict(hidden=32, num_layers=2, model_kwargs=dict(
        num_channels=8, latent_hidden=[64], two_body_hidden=[64], embed_dim=16,
        edge_energy_hidden=[32]))
    TRAIN = dict(epochs=20, batch_size=8, seeds=[0], eval_every=2,
                 checkpoint_every=2, eval_batch_size=50)
    MD = dict(replicas=4, steps=10_000, record_every=20)

# %% [markdown]
# ## 1. Train Allegro
#
# GFN2-xTB Langevin frames at 500 K (cached), Allegro with its normalizations (per-species
# energy shift and scale, `1/sqrt(N̄)` on its environment sums). The loss is the per-atom energy
# MSE plus the force MSE.

# %%
import pathlib
import tempfile
import time

data_dir = molecules.get_molecular_dataset(DATA, progress=True)
run_dir = pathlib.Path(tempfile.mkdtemp(prefix="md_notebook_")) / "allegro"
config = train.merge(train.preset("allegro-uracil"), {
    "molecules": dict(molecule=DATA.molecule, frames=DATA.frames, **SPLIT),
    "model": MODEL, "train": TRAIN})
t0 = time.perf_counter()
summary = train.train(config, run_dir, data_dir=data_dir)
seed0 = summary["seeds"][0]
print(f"trained in {time.perf_counter() - t0:.0f} s: test energy MAE "
      f"{seed0['test_energy_mae']:.1f} meV, force MAE {seed0['test_force_mae']:.1f} meV/Å")

# %% [markdown]
# ## 2. Load it as a potential
#
# `load_potential` rebuilds the model from the run's configuration (the training-set statistics
# are the run's), restores the best-validation parameters and returns a `Potential`:
# `energy_and_forces(positions)` (jitted, padded to size buckets), `energy_forces_fn()` (a
# traceable function for integrators) and `frames`, the run's data split by split.

# %%
from geonorm_jax.potentials import load_potential

pot = load_potential(run_dir, data_dir=data_dir)
test = pot.frames["test"]
e, f = pot.energy_and_forces(test[0])
print(f"{pot.spec.name} on {pot.info.get('molecule')}: {len(pot.atomic_numbers)} atoms, "
      f"cutoff {pot.cutoff:g} Å; E(test frame 0) = {float(e):.3f} eV, "
      f"max |F| = {float(np.abs(f).max()):.3f} eV/Å")

# %% [markdown]
# ## 3. Langevin MD in JAX
#
# Each replica starts from a different test frame with Maxwell-Boltzmann velocities at 500 K
# (Fu et al.'s temperature and 0.5 fs time step; their thermostat is Nosé-Hoover, this one
# Langevin BAOAB with friction 0.01/fs). One `simulate` call runs every replica in one
# compiled program.

# %%
import jax

from geonorm_jax.potentials import masses_of, ns_per_day, simulate
from geonorm_jax.potentials import observables as obs

starts = np.linspace(0, len(test) - 1, MD["replicas"]).round().astype(int)
masses = masses_of(pot.atomic_numbers)
t0 = time.perf_counter()
traj = simulate(pot.energy_forces_fn(), test[starts], masses, steps=MD["steps"], dt=0.5,
                record_every=MD["record_every"], thermostat="langevin", temperature=500.0,
                friction=0.01, key=jax.random.key(0))
jax.block_until_ready(traj.positions)
seconds = time.perf_counter() - t0
print(f"{MD['replicas']} replicas x {MD['steps'] * 0.5 / 1000:g} ps in {seconds:.1f} s "
      f"(compilation included): {ns_per_day(MD['steps'], 0.5, seconds, MD['replicas']):.3g} "
      "ns/day")

# %% [markdown]
# Stability (Fu et al.): a replica becomes unstable at the first frame where a bond length is
# more than 0.5 Å from its mean over the training frames. h(r) is the normalized histogram of
# all interatomic distances over the stable frames; the reference is the run's training and
# test frames (the generating xTB trajectories), and the h(r) error is `∫ |h - h_ref| dr`.

# %%
import jax.numpy as jnp

times_ps = np.asarray(traj.time_fs) / 1000.0
train_frames = pot.frames["train"]
pairs = obs.bonds(pot.atomic_numbers, train_frames[0])
ref_lengths = np.asarray(obs.bond_lengths(jnp.asarray(train_frames), pairs)).mean(0)
stab = jax.vmap(obs.time_to_instability, in_axes=(0, None, None, None))(
    traj.positions, jnp.asarray(pairs), jnp.asarray(ref_lengths), jnp.asarray(times_ps))
h_ref = obs.distance_histogram(jnp.asarray(np.concatenate([train_frames, test])))
masks = jnp.arange(len(times_ps))[None] < stab.first_frame[:, None]
h = jax.vmap(obs.distance_histogram, in_axes=(0, None, 0))(traj.positions,
                                                          obs.DEFAULT_HR_BINS, masks)
for r in range(MD["replicas"]):
    state = "stable" if bool(stab.stable[r]) else f"unstable at {float(stab.time[r]):.3f} ps"
    print(f"replica {r} (test frame {starts[r]}): {state}; h(r) error "
          f"{float(obs.h_error(h[r], h_ref)):.3f}; mean T "
          f"{float(np.nanmean(np.asarray(traj.temperature[r, 1:]))):.0f} K")

# %%
r_mid = 0.5 * (obs.DEFAULT_HR_BINS[1:] + obs.DEFAULT_HR_BINS[:-1])
fig, axes = plt.subplots(1, 3, figsize=(15, 3.6), constrained_layout=True)
for r in range(MD["replicas"]):
    axes[0].plot(times_ps, traj.total_energy[r], color=f"C{r}", label=f"total, replica {r}")
    axes[0].plot(times_ps, traj.potential_energy[r], color=f"C{r}", ls="--", lw=0.8)
    axes[1].plot(times_ps, traj.temperature[r], color=f"C{r}", lw=0.8)
    axes[2].plot(r_mid, h[r], color=f"C{r}", lw=1, label=f"replica {r}")
axes[0].set(xlabel="time (ps)", ylabel="energy (eV)", title="total (solid), potential (dashed)")
axes[0].legend(fontsize=7)
axes[1].axhline(500, color="k", lw=0.8, ls=":")
axes[1].set(xlabel="time (ps)", ylabel="T (K)", title="temperature (Langevin, 500 K)")
axes[2].plot(r_mid, h_ref, color="k", lw=2, label="reference (xTB frames)")
axes[2].set(xlim=(0, 6), xlabel="r (Å)", ylabel="h(r) (1/Å)", title="distance histogram")
axes[2].legend(fontsize=7)
plt.show()

# %% [markdown]
# ## 4. The same potential in ASE
#
# `GeonormCalculator` serves `energy` and `forces` from the same jitted function, so ASE's
# optimizers and integrators run on it (free space only; stress is not implemented).

# %%
from ase import Atoms, units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.optimize import BFGS

from geonorm_jax.potentials import GeonormCalculator

atoms = Atoms(numbers=pot.atomic_numbers, positions=test[0])
atoms.calc = GeonormCalculator(pot)
e_ase, f_ase = atoms.get_potential_energy(), atoms.get_forces()
print(f"ASE single point: E = {e_ase:.3f} eV (potential: {float(e):.3f} eV), "
      f"max |F - F_potential| = {np.abs(f_ase - np.asarray(f)).max():.2e} eV/Å")

opt = BFGS(atoms, logfile=None)
opt.run(fmax=0.05, steps=20 if FAST else 200)
print(f"BFGS: {opt.nsteps} steps, E = {atoms.get_potential_energy():.3f} eV, "
      f"max |F| = {np.abs(atoms.get_forces()).max():.3f} eV/Å")

MaxwellBoltzmannDistribution(atoms, temperature_K=500, rng=np.random.default_rng(0))
dyn = Langevin(atoms, 0.5 * units.fs, temperature_K=500, friction=0.01 / units.fs,
               rng=np.random.default_rng(0))
dyn.run(20 if FAST else 200)
print(f"ase.md Langevin: {dyn.nsteps} steps, T = {atoms.get_temperature():.0f} K, "
      f"E = {atoms.get_potential_energy():.3f} eV")

# %% [markdown]
# ## Reading the result
#
# A model's force MAE on held-out frames does not say how long MD with it stays physical:
# errors accumulate along a trajectory, and the trajectory visits geometries the test split
# never shows. Fu et al. therefore report stability and h(r) beside the MAE. In FAST mode the
# model is far too small and short-trained to be stable; in full mode compare the times to
# instability and the h(r) error with the force MAE above. `python -m experiments.md_stability`
# does this for Allegro, SchNet and GemNet-T with and without their normalizations.
