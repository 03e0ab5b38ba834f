"""Build the Colab notebooks of geonorm-jax from the cell lists below.

The ``.ipynb`` files are generated, never edited by hand: change a cell here and run

    python notebooks/build.py

Every notebook is written without outputs and with ``execution_count`` null (outputs are
stripped in git; ``tests/test_notebooks.py`` checks it and executes every notebook with
``GEONORM_JAX_FAST=1``).
"""

from __future__ import annotations

import pathlib
import sys
import textwrap
import tomllib

import nbformat
from nbformat import v4

HERE = pathlib.Path(__file__).resolve().parent
# The repository address lives in one place, pyproject.toml's [project.urls]; the install cell,
# the Colab badges here and the README's badges (checked by tests/test_notebooks.py) follow it.
REPOSITORY_URL = tomllib.loads((HERE.parent / "pyproject.toml").read_text())["project"]["urls"][
    "Repository"
]
REPO = REPOSITORY_URL.removeprefix("https://github.com/")
INSTALL_SOURCE = f"geonorm-jax @ git+{REPOSITORY_URL}"


def colab_url(filename: str) -> str:
    return f"https://colab.research.google.com/github/{REPO}/blob/main/notebooks/{filename}"


# How long each notebook takes with FAST off, stated in its first cell.
RUNTIME = {
    "01_normalization_catalogue.ipynb": (
        "Full mode (FAST off): about 30 s on a 2-core CPU runtime (measured: 28 s). On a GPU "
        "runtime: not measured yet; compilation dominates at these sizes."
    ),
    "02_train_egnn_nbody.ipynb": (
        "Full mode (FAST off) trains two EGNNs (N = 20, 5 layers, width 64, 3 seeds vmapped, "
        "150 epochs of 20 steps): about 70 minutes on a 2-core CPU runtime, estimated from "
        "`geonorm-jax bench` (dense N = 20 step: 27.7 ms for 8 systems and 4 layers, scaled to "
        "150 systems and 5 layers, times 3000 steps and 2 models); a GPU runtime is "
        "recommended (not measured yet). FAST mode takes about a minute. The training cell "
        "shows a progress bar per run."
    ),
    "04_molecules_allegro.ipynb": (
        "Full mode (FAST off) first generates the default uracil data set (2000 GFN2-xTB "
        "frames; measured 3889 s on a busy 2-core machine, about 30 to 65 minutes on a 2-core "
        "runtime, cached afterwards), then trains two Allegro models (about 17k parameters, "
        "2 seeds vmapped, 20 epochs of 125 steps): about 8 minutes on a 2-core CPU runtime, "
        "estimated from a measured 3.2 s per epoch of 50 steps for 2 seeds. FAST mode takes "
        "about a minute (a few water frames). On a GPU runtime: not measured yet."
    ),
    "03_geometric_match.ipynb": (
        "Full mode (FAST off): about 15 minutes on a 2-core CPU runtime (measured: 924 s on a "
        "busy machine, 891 s of it in the four training runs of the last section, which show "
        "a progress bar). On a GPU runtime: not measured yet."
    ),
}


def md(text: str):
    return v4.new_markdown_cell(textwrap.dedent(text).strip("\n"))


def code(text: str):
    return v4.new_code_cell(textwrap.dedent(text).strip("\n"))


def header(filename: str, title: str, intro: str) -> list:
    badge = (
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"({colab_url(filename)})"
    )
    runtime = f"**Run time.** {RUNTIME[filename]}"
    return [md(f"# {title}\n\n{badge}\n\n{runtime}\n\n" + textwrap.dedent(intro).strip("\n"))]


INSTALL = code(
    f'''
    # Installs geonorm-jax only where it is missing: from the checkout this notebook sits in
    # when there is one (pip install -e), otherwise on Colab from the git repository.
    import importlib.util
    import pathlib
    import subprocess
    import sys

    try:
        import google.colab  # noqa: F401

        IN_COLAB = True
    except ImportError:
        IN_COLAB = False
    if importlib.util.find_spec("geonorm_jax") is None:
        checkout = next((p for p in (pathlib.Path.cwd(), *pathlib.Path.cwd().parents)
                         if (p / "pyproject.toml").is_file() and (p / "geonorm_jax").is_dir()),
                        None)
        if checkout is not None:
            source = ["-e", str(checkout)]
        elif IN_COLAB:
            source = ["{INSTALL_SOURCE}"]
        else:
            raise ImportError("geonorm_jax is not installed: pip install '{INSTALL_SOURCE}'")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *source], check=True)
    '''
)


def settings(extra: str = "") -> object:
    """The FAST cell: one switch that CI turns on through GEONORM_JAX_FAST=1."""
    return code(
        '''
        import os
        import tempfile

        # FAST=True shrinks every size so the notebook runs in well under a minute on 2 CPU
        # cores (CI sets GEONORM_JAX_FAST=1). Leave it off for results that mean something.
        FAST = os.environ.get("GEONORM_JAX_FAST", "0") == "1"
        if FAST:  # generated data sets go to a throw-away cache
            os.environ.setdefault("GEONORM_JAX_CACHE", tempfile.mkdtemp(prefix="geonorm_cache_"))
        print("FAST mode" if FAST else "full mode")
        '''
        + textwrap.dedent(extra)
    )


# ---------------------------------------------------------------------------------------------
# 01: the normalization catalogue
# ---------------------------------------------------------------------------------------------

NB01 = "01_normalization_catalogue.ipynb"


def notebook_01() -> list:
    return header(
        NB01,
        "The normalization catalogue: pure functions, Flax modules, equivariance, audit",
        """
        geonorm-jax implements every normalization layer of the survey *Geometric
        Considerations for Normalization Layers in Equivariant Neural Networks* (Table 1) and of
        the GeoNorm paper (Meng et al., *Towards Geometric Normalization Techniques in SE(3)
        Equivariant GNNs for Physical Dynamics Simulations*). This notebook

        1. calls layers as **pure functions** (`init`/`apply`, like optax) and as **Flax Linen
           modules**;
        2. shows on a small point cloud that **GeoNorm is equivariant** to rotations and
           translations while **ScaleNorm breaks translation equivariance**;
        3. **audits a layer you write yourself** against the survey's geometric-match
           criterion.
        """,
    ) + [
        INSTALL,
        settings(),
        code(
            """
            %matplotlib inline
            import flax.linen as nn
            import jax
            import jax.numpy as jnp
            import matplotlib.pyplot as plt
            import numpy as np

            import geonorm_jax as gj
            from geonorm_jax import audit
            from geonorm_jax import linen as gjl

            print("geonorm-jax", gj.__version__, "| jax", jax.__version__)
            """
        ),
        md(
            """
            ## 1. The catalogue

            Every layer is a `NormInfo` entry of `gj.CATALOG`: its name, the kind of input it
            acts on (`features [batch, nodes, channels]`, `vectors [batch, nodes, channels, 3]`,
            `coordinates [batch, nodes, 3]` or `weights [fan_in, fan_out]`), the survey's
            formula and the axes it reduces over, in the survey's letters: `b` batch, `x` nodes,
            `v` channels, `d` the three spatial components.
            """
        ),
        code(
            """
            print(f"{'name':<32} {'kind':<12} {'reduces':<20} formula")
            for info in gj.CATALOG:
                print(f"{info.name:<32} {info.kind:<12} {info.reduced_axes:<20} {info.formula}")
            """
        ),
        md(
            r"""
            ## 2. Layers as pure functions

            A constructor closes over the hyperparameters and returns `Norm(init, apply)`:

            * `params, state = norm.init(key, x, **context)`
            * `y, new_state = norm.apply(params, state, x, mask=None, training=False, **context)`

            LayerNorm over the channels of each node (Ba et al., 2016) computes, for node $i$,

            $$
            y_{iv} = \gamma_v \frac{A_{iv} - \mu_i}{\sqrt{\sigma_i^2 + \epsilon}} + \beta_v,
            \qquad \mu_i = \tfrac{1}{C}\textstyle\sum_v A_{iv},\quad
            \sigma_i^2 = \tfrac{1}{C}\textstyle\sum_v (A_{iv} - \mu_i)^2 .
            $$

            After it, every node has mean 0 and standard deviation 1 over its channels:
            """
        ),
        code(
            """
            key = jax.random.PRNGKey(0)
            h = 3.0 * jax.random.normal(key, (2, 5, 8)) + 1.0  # features [batch, nodes, channels]

            ln = gj.norms.layer_norm()
            params, state = ln.init(jax.random.PRNGKey(1), h)
            y, _ = ln.apply(params, state, h)
            print("params:", jax.tree.map(jnp.shape, params))
            print("mean over channels:", np.round(np.asarray(y.mean(-1)), 4)[0])
            print("std over channels: ", np.round(np.asarray(y.std(-1)), 4)[0])
            """
        ),
        md(
            """
            BatchNorm has running statistics: they live in `state`, and `apply` returns the
            updated state only when `training=True`. A node mask (`True` = real node) keeps
            padded nodes out of every statistic.
            """
        ),
        code(
            """
            bn = gj.norms.batch_norm(momentum=0.9)
            params, state = bn.init(jax.random.PRNGKey(2), h)
            mask = jnp.array([[True] * 5, [True, True, True, False, False]])  # graph 2 has 3 nodes
            _, new_state = bn.apply(params, state, h, mask=mask, training=True)
            print("state:", jax.tree.map(jnp.shape, state))
            print("running mean before:", np.round(np.asarray(state["mean"]), 3)[:4])
            print("running mean after: ", np.round(np.asarray(new_state["mean"]), 3)[:4])
            """
        ),
        md(
            """
            ## 3. The same layers as Flax modules

            `gj.linen.NormLayer(norm)` wraps any `Norm`; the layer's parameters go to the
            `"params"` collection and its running state to `"batch_stats"`. `BatchNorm`,
            `LayerNorm`, `GroupNorm` and `GeoNorm` take Flax's argument names, and
            `norm_layer(name, **hyperparameters)` builds any catalogue entry.
            """
        ),
        code(
            """
            class Block(nn.Module):
                \"\"\"Dense -> SiLU -> BatchNorm, the norm from geonorm-jax.\"\"\"

                @nn.compact
                def __call__(self, h, mask=None, training=False):
                    h = nn.silu(nn.Dense(16)(h))
                    return gjl.BatchNorm(momentum=0.9)(h, mask=mask, training=training)


            block = Block()
            variables = block.init(jax.random.PRNGKey(3), h)
            print(jax.tree.map(jnp.shape, variables))
            y, updates = block.apply(variables, h, mask=mask, training=True,
                                     mutable=["batch_stats"])
            print("output", y.shape, "| updated collections:", list(updates))
            """
        ),
        code(
            """
            x = jax.random.normal(jax.random.PRNGKey(4), (2, 10, 3))  # coordinates [B, N, 3]
            mu0 = gj.geometry.centroid(x)                             # GeoNorm's input centroid
            for layer in (gjl.GeoNorm(sigma="system"), gjl.norm_layer("scale_norm_l2")):
                v = layer.init(jax.random.PRNGKey(5), x, mu0=mu0)
                out = layer.apply(v, x, mu0=mu0)
                print(f"{layer.make_norm().name:<16} params {jax.tree.map(jnp.shape, v['params'])}"
                      f" -> output {out.shape}")
            """
        ),
        md(
            r"""
            ## 4. Equivariance on a point cloud: GeoNorm versus ScaleNorm

            A layer $F$ acting on coordinates is **SE(3)-equivariant** when rotating and
            translating its input rotates and translates its output the same way
            (GeoNorm paper, Sec. 3):

            $$ F(\mathbf{x}R^\top + \mathbf{t}) = F(\mathbf{x})R^\top + \mathbf{t}. $$

            **ScaleNorm** (GeoNorm paper, Eq. 4) scales each position to a learned length,

            $$ F(\mathbf{x}_i) = g_i \frac{\mathbf{x}_i}{\|\mathbf{x}_i\|_2}. $$

            A rotation preserves $\|\mathbf{x}_i\|$, so ScaleNorm is rotation-equivariant; a
            translation changes $\|\mathbf{x}_i + \mathbf{t}\|$, so it is **not**
            translation-equivariant (Lemma 2): it rescales about the origin of the frame.

            **GeoNorm** (Eq. 5) normalizes about the centroid $\mu(\mathbf{x})$ and restores
            the position through the centroid $\mu_0$ of the model's input:

            $$
            \mu(\mathbf{x}) = \frac{1}{N}\sum_{i=1}^N \mathbf{x}_i,\qquad
            F(\mathbf{x}_i) = g_i \frac{\mathbf{x}_i - \mu(\mathbf{x})}{\sigma(\mathbf{x}_i)}
              + \frac{\mu(\mathbf{x}) - \mu_0}{\|\mu(\mathbf{x}) - \mu_0\|_2}\, b_i + \mu_0 .
            $$

            $\mathbf{x}_i - \mu$ and $\mu - \mu_0$ are unchanged by a translation and rotate
            with $R$; $\sigma$ is invariant; $\mu_0$ moves with the input. So GeoNorm is
            SE(3)-equivariant (Theorem 1). Here we use the Figure 3 caption's reading of
            $\sigma$ (one spread for the whole system,
            $\sigma = \sqrt{\tfrac{1}{3N}\sum_{i}\|\mathbf{x}_i - \mu\|^2 + \epsilon}$) with
            shared $g, b$.

            The cloud: 20 points on a helix, as they might look inside a network (a layer has
            moved them, so the centroid $\mu$ differs from the input centroid $\mu_0$).
            """
        ),
        code(
            """
            n = 20
            s = np.linspace(0.0, 3.0 * np.pi, n)
            x0 = np.stack([np.cos(s), np.sin(s), 0.25 * s], axis=-1) + np.array([2.0, 1.0, 0.0])
            x0 = jnp.asarray(x0[None], jnp.float32)                      # [1, 20, 3]
            noise = jax.random.normal(jax.random.PRNGKey(6), x0.shape)
            drift = 0.15 * noise + jnp.array([0.5, 0.0, 0.0])
            x = x0 + drift                                               # a layer's positions
            mu0 = gj.geometry.centroid(x0)                               # [1, 3]

            geo = gj.norms.geo_norm(sigma="system", params="shared")
            geo_params, geo_state = geo.init(key, x, mu0=mu0)
            geo_params = {"scale": jnp.float32(1.5), "bias": jnp.float32(0.8)}  # "trained" values
            sn = gj.norms.scale_norm(norm="l2", per_particle=False)
            sn_params, sn_state = sn.init(key, x)
            sn_params = {"scale": jnp.float32(2.0)}

            def geo_fn(x, mu0):
                return geo.apply(geo_params, geo_state, x, mu0=mu0)[0]

            def sn_fn(x, mu0):
                del mu0  # ScaleNorm does not use it
                return sn.apply(sn_params, sn_state, x)[0]

            # one rotation and one translation
            R = gj.geometry.random_rotation(jax.random.PRNGKey(7))
            t = jnp.array([3.0, -2.0, 2.5])
            g = lambda p: p @ R.T + t  # acts on points [..., 3]

            results = {}
            for name, fn in (("GeoNorm", geo_fn), ("ScaleNorm", sn_fn)):
                f_of_gx = fn(g(x), g(mu0))   # transform, then normalize
                g_of_fx = g(fn(x, mu0))      # normalize, then transform
                err = float(jnp.max(jnp.abs(f_of_gx - g_of_fx)))
                results[name] = (f_of_gx[0], g_of_fx[0])
                print(f"{name:<9}: max |F(g.x) - g.F(x)| = {err:.2e}")
            """
        ),
        md(
            """
            Left: the cloud before (blue) and after (orange) the rotation and translation. Middle
            and right: normalize-then-transform (black crosses) against transform-then-normalize
            (coloured dots). For GeoNorm they land on the same points; for ScaleNorm they do not,
            because after the translation every point is rescaled towards a different origin.
            """
        ),
        code(
            """
            def scatter(ax, p, **kw):
                p = np.asarray(p)
                ax.plot(p[:, 0], p[:, 1], p[:, 2], color="0.6", lw=0.8)  # the helix, in order
                ax.scatter(p[:, 0], p[:, 1], p[:, 2], **kw)

            fig = plt.figure(figsize=(15, 4.8))
            ax = fig.add_subplot(1, 3, 1, projection="3d")
            scatter(ax, x[0], c="tab:blue", label="x")
            scatter(ax, g(x)[0], c="tab:orange", label="g.x = x R^T + t")
            ax.set_title("input, before and after g")
            ax.legend(loc="upper left", fontsize=8)
            for k, (name, color) in enumerate((("GeoNorm", "tab:green"), ("ScaleNorm", "tab:red"))):
                ax = fig.add_subplot(1, 3, k + 2, projection="3d")
                f_of_gx, g_of_fx = results[name]
                scatter(ax, f_of_gx, c=color, s=40, label="F(g.x)")
                scatter(ax, g_of_fx, c="k", marker="x", s=40, label="g.F(x)")
                ax.set_title(name)
                ax.legend(loc="upper left", fontsize=8)
            plt.tight_layout()
            plt.show()
            """
        ),
        md(
            r"""
            The library's test kit measures the same thing for every group at once
            (`"SO3"`: rotations, `"O3"`: rotations times $-I$, `"translation"`,
            `"permutation"` of the particles). `mu0` is a point: it rotates and translates with
            the cloud. The errors are `(max |F(g.x) - g.F(x)|, max |g.F(x)|)`:
            """
        ),
        code(
            """
            for name, fn in (("GeoNorm", geo_fn), ("ScaleNorm", sn_fn)):
                errors = gj.equivariance_errors(fn, jax.random.PRNGKey(8), x, mu0,
                                                group=("SO3", "O3", "translation", "permutation"),
                                                kinds=("coordinates", "point"),
                                                out_kinds=("coordinates",))
                print(name.ljust(10), {k: f"{e:.1e}" for k, (e, _) in errors.items()})
            """
        ),
        md(
            r"""
            ## 5. Audit a layer you write

            Any `Norm(init, apply, kind=...)` can be audited. Here is a layer written in a few
            lines: it rescales the cloud about its own centroid to a learned spread $g$ and puts
            the centroid back,

            $$ F(\mathbf{x}_i) = g\,\frac{\mathbf{x}_i - \mu(\mathbf{x})}{\sigma(\mathbf{x})}
               + \mu(\mathbf{x}),\qquad
               \sigma = \sqrt{\tfrac{1}{3N}\textstyle\sum_i\|\mathbf{x}_i - \mu\|^2 + \epsilon}. $$

            Padded nodes (mask `False`) must not enter the statistics, so it uses the masked
            helpers.
            """
        ),
        code(
            """
            def centered_rms_norm(*, epsilon=1e-6):
                \"\"\"F(x_i) = g (x_i - mu) / sigma + mu on coordinates [batch, nodes, 3].\"\"\"

                def init(key, x, **context):
                    return {"scale": jnp.ones((), x.dtype)}, {}

                def apply(params, state, x, *, mask=None, training=False, **context):
                    mu = gj.geometry.centroid(x, mask)[:, None, :]                       # [B, 1, 3]
                    sq = jnp.sum(jnp.square(x - mu), axis=-1, keepdims=True)            # [B, N, 1]
                    sigma = jnp.sqrt(gj.norms.masked_mean(sq, mask, axes=(1,)) / 3 + epsilon)
                    y = params["scale"] * (x - mu) / sigma + mu
                    if mask is not None:
                        y = jnp.where(mask[..., None], y, x)  # padded nodes unchanged
                    return y.astype(x.dtype), state

                return gj.Norm(init, apply, kind="coordinates", name="centered_rms_norm")


            my_norm = centered_rms_norm()
            result = audit.audit(my_norm, "nbody-dynamics", num_inputs=1 if FAST else 3)
            print(result)
            """
        ),
        md(
            r"""
            The layer keeps every symmetry of the N-body task (rotations, reflections,
            translations, permutations; no batch or padding dependence), yet it is
            **mismatched**: it is invariant to the scale of the system (condition 2 of the
            survey's Definition 3), while the N-body dynamics depend on it (Coulomb forces fall
            off with distance). For a task that *is* scale-invariant, such as classifying a
            point cloud normalized to the unit sphere, the same measurements give a match; a
            task is judged without measuring again:
            """
        ),
        code(
            """
            for task in ("nbody-dynamics", "point-cloud-classification"):
                judged = audit.judge(result, task)
                print(f"{task:<28} matched={judged.matched}  {judged.violations}")
            """
        ),
        md(
            """
            Next: `02_train_egnn_nbody.ipynb` trains EGNN with and without GeoNorm, and
            `03_geometric_match.ipynb` audits the whole catalogue.
            """
        ),
    ]


# ---------------------------------------------------------------------------------------------
# 02: training EGNN on charged N-body
# ---------------------------------------------------------------------------------------------

NB02 = "02_train_egnn_nbody.ipynb"


def notebook_02() -> list:
    return header(
        NB02,
        "Training EGNN on charged N-body, without normalization and with GeoNorm",
        """
        The GeoNorm paper shows that EGNN's coordinate update becomes unstable on larger
        particle systems and that GeoNorm, an SE(3)-equivariant normalization of the
        coordinates, stabilizes training. This notebook

        1. simulates a small **charged N-body** data set and plots trajectories in 3D;
        2. trains **EGNN without normalization and with GeoNorm** on N = 20 particles, several
           seeds at once in one `jax.vmap`ped program;
        3. plots the loss curves on a log scale, marks explosions, and measures the
           **rotation and translation errors (RTE)**;
        4. saves and restores a checkpoint with **orbax**.
        """,
    ) + [
        INSTALL,
        settings(),
        code(
            """
            %matplotlib inline
            import dataclasses
            import pathlib

            import jax
            import jax.numpy as jnp
            import matplotlib.pyplot as plt
            import numpy as np

            from geonorm_jax import data, train

            N = 20  # particles
            if FAST:  # short trajectories (frames every 50 steps), tiny splits and model
                DATA = dict(particles=N, train=16, valid=8, test=8,
                            steps=1000, sample_freq=50, frame_in=2, frame_out=6)
                MODEL = dict(hidden=16, layers=2)
                TRAIN = dict(epochs=6, batch_size=8, seeds=[30, 40], eval_every=2,
                             checkpoint_every=6, eval_batch_size=8, rte_draws=2)
                LR = 5e-3
            else:
                # the GeoNorm paper's N-body protocol at N = 20: 1000 steps between input
                # (frame 30) and target (frame 40), Adam, batch 50, seeds 30/40/50
                DATA = dict(particles=N, train=1000, valid=500, test=500)
                MODEL = dict(hidden=64, layers=5)
                TRAIN = dict(epochs=150, batch_size=50, seeds=[30, 40, 50], eval_every=5,
                             checkpoint_every=25, rte_draws=3)
                LR = 5e-3
            # GeoNorm with the Figure 3 caption's statistics (one spread sigma for the whole
            # system). "geo_norm" is Eq. 5 as printed: a spread sigma_i per particle, which puts
            # every particle at distance |g_i| from the centroid (see notebook 03's audit).
            GEONORM = "geo_norm_system"
            RUNS = pathlib.Path(tempfile.mkdtemp(prefix="geonorm_runs_"))
            print("runs in", RUNS)
            """
        ),
        md(
            r"""
            ## 1. The charged N-body system

            The simulator of Kipf et al. (2018), extended to 3D by Fuchs et al. (2020) and used
            by EGNN and the GeoNorm paper: $N$ particles with charges $q_i = \pm 1$ interact by
            Coulomb forces,

            $$ \mathbf{F}_i = \sum_{j\neq i} k\, q_i q_j
               \frac{\mathbf{x}_i - \mathbf{x}_j}{\|\mathbf{x}_i - \mathbf{x}_j\|^3}, $$

            integrated with step $dt = 10^{-3}$; a frame is saved every 100 steps. The task:
            from the positions, velocities and charges at one frame, predict the positions
            1000 steps later (frames 30 $\to$ 40; in FAST mode, a much shorter horizon).

            `data.get_dataset` simulates the train, validation and test splits once (in float64)
            and caches them on disk (`$GEONORM_JAX_CACHE`); the trainer below loads the same
            files. Like charges (same colour) repel, opposite charges attract. A few training
            trajectories, one line per particle, the dot marks the start:
            """
        ),
        code(
            """
            data_config = data.DataConfig(**DATA)
            path = data.get_dataset(data_config)  # generated once, then read from the cache
            trajectories = data.load_trajectories(path, "train")
            loc = trajectories["loc"][:3]          # [trajectories, frames, particles, 3]
            charges = trajectories["charges"][:3]  # [trajectories, particles, 1]
            print(path.name, {k: v.shape for k, v in trajectories.items()})

            fig = plt.figure(figsize=(15, 4.8))
            for s in range(loc.shape[0]):
                ax = fig.add_subplot(1, loc.shape[0], s + 1, projection="3d")
                for i in range(N):
                    color = "tab:red" if charges[s, i, 0] > 0 else "tab:blue"
                    ax.plot(*loc[s, :, i].T, color=color, lw=1)
                    ax.scatter(*loc[s, 0, i], color=color, s=12)
                ax.set_title(f"trajectory {s} ({loc.shape[1]} frames)")
            plt.tight_layout()
            plt.show()
            """
        ),
        md(
            r"""
            ## 2. Two models, several seeds each

            EGNN (Satorras et al., 2021), as written in the GeoNorm paper (Eq. 2), updates
            invariant features $\mathbf{h}$ and coordinates $\mathbf{x}$ in each layer:

            $$
            \mathbf{m}_{ij} = \phi_m(\mathbf{h}_i, \mathbf{h}_j, \|\mathbf{x}_i - \mathbf{x}_j\|^2,
            e_{ij}),\quad
            \mathbf{x}_i \leftarrow \mathbf{x}_i + \sum_{j\neq i}(\mathbf{x}_i - \mathbf{x}_j)\,
            \phi_x(\mathbf{m}_{ij}),\quad
            \mathbf{h}_i \leftarrow \phi_h\big(\mathbf{h}_i, \textstyle\sum_j \mathbf{m}_{ij}\big).
            $$

            (The velocity variant also adds $\phi_v(\mathbf{h}_i)\,\mathbf{v}_i$.) The coordinate
            update is a sum over $N-1$ neighbours, and it is applied once per layer: with many
            particles and layers it can blow up. **GeoNorm** is applied to the positions after
            every layer but the last (Eq. 5, shown in notebook 01).

            The configuration is a `RunConfig` (data, model, optimizer, train); `train.train`
            trains all seeds at once: one state per seed stacked on a leading axis, and one
            `jax.jit(jax.vmap(epoch))` for all of them. A seed whose loss becomes NaN, infinite
            or larger than `explosion_threshold` is frozen and reported as exploded.
            """
        ),
        code(
            """
            def run_config(norm):
                return train.merge(train.RunConfig(), {
                    "data": DATA,
                    "model": {**MODEL, "norm": norm},
                    "optimizer": {"lr": LR},
                    "train": TRAIN,
                })

            runs = {"EGNN": (None, RUNS / "egnn"), "EGNN + GeoNorm": (GEONORM, RUNS / "geonorm")}
            summaries, setups = {}, {}
            for label, (norm, run_dir) in runs.items():
                config = run_config(norm)
                setups[label] = train.build(config)   # generates (or loads) the data set once
                summaries[label] = train.train(config, run_dir, setup=setups[label], progress=True)
                print(f"== {label}: {summaries[label]['wall_time']:.1f} s")
                print(train.format_table(summaries[label]))

            train_split = setups["EGNN"].data["train"]
            print("train split:", {k: tuple(v.shape) for k, v in train_split.items()})
            """
        ),
        md(
            """
            ## 3. Training curves

            Mean training loss per epoch and validation MSE, one line per seed, on a log scale.
            A cross marks the epoch where a seed exploded (its loss became NaN/inf or exceeded
            the threshold; its parameters were frozen from then on).
            """
        ),
        code(
            """
            %matplotlib inline
            fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(12, 4))
            colors = {"EGNN": "tab:gray", "EGNN + GeoNorm": "tab:green"}
            for label, (norm, run_dir) in runs.items():
                records = train.read_metrics(run_dir)
                seeds = TRAIN["seeds"]
                for i, seed in enumerate(seeds):
                    ep = [r["epoch"] for r in records if r["train_loss"][i] is not None]
                    lo = [r["train_loss"][i] for r in records if r["train_loss"][i] is not None]
                    ax_train.plot(ep, lo, color=colors[label], alpha=0.8,
                                  label=label if i == 0 else None)
                    ev = [r for r in records if "val_mse" in r and r["val_mse"][i] is not None]
                    ax_val.plot([r["epoch"] for r in ev], [r["val_mse"][i] for r in ev],
                                color=colors[label], marker=".", alpha=0.8,
                                label=label if i == 0 else None)
                    boom = summaries[label]["seeds"][i]["exploded_epoch"]
                    if boom is not None:
                        for ax in (ax_train, ax_val):
                            ax.plot([boom], [lo[-1] if lo else 1.0], "x", color="tab:red",
                                    ms=12, mew=3)
                        ax_train.annotate(f"seed {seed} exploded", (boom, lo[-1] if lo else 1.0),
                                          color="tab:red", xytext=(5, 5),
                                          textcoords="offset points")
            for ax, name in ((ax_train, "train loss (MSE)"), (ax_val, "validation MSE")):
                ax.set_yscale("log")
                ax.set_xlabel("epoch")
                ax.set_ylabel(name)
                ax.grid(True, which="both", alpha=0.3)
                ax.legend()
            plt.tight_layout()
            plt.show()

            for label in runs:
                booms = [(p["seed"], p["exploded_epoch"]) for p in summaries[label]["seeds"]
                         if p["exploded"]]
                print(f"{label:<16} explosions: {booms if booms else 'none'}")
            """
        ),
        md(
            r"""
            ## 4. Rotation and translation errors (RTE)

            The GeoNorm paper's Table 1: rotate (or translate) every test input *and* its
            target, and measure the MSE again:

            $$ R_{err} = \mathrm{MSE}\big(f(\mathbf{x}R^\top, \mathbf{v}R^\top),\,
               \mathbf{y}R^\top\big),\qquad
               T_{err} = \mathrm{MSE}\big(f(\mathbf{x} + \mathbf{t}, \mathbf{v}),\,
               \mathbf{y} + \mathbf{t}\big), $$

            with $R$ Haar-random and $\mathbf{t}\sim\mathcal N(0, \tau^2 I)$, $\tau$ the spread
            of the test positions. $\Delta R_{err}$ and $\Delta T_{err}$ are the extra error over
            the plain test MSE: both are zero (up to float32 rounding) for an SE(3)-equivariant
            model. EGNN is equivariant and GeoNorm keeps it so.
            """
        ),
        code(
            """
            for label, (norm, run_dir) in runs.items():
                result = train.evaluate_run(run_dir, rte=True)
                print(f"== {label} (best-validation parameters)")
                print(train.format_rte_table(result))
            """
        ),
        md(
            """
            ## 5. Save and restore a checkpoint with orbax

            Every run directory holds orbax checkpoints: `checkpoints/interval/<epoch>` (the
            whole stacked train state: parameters, optimizer state, data-order key, explosion
            flags) and `checkpoints/best/<epoch>` (each seed's best-validation parameters).
            `train.train(config, run_dir, resume=True)` continues from the newest one. Here we
            restore the last state of the GeoNorm run and check that it reproduces the test MSE
            logged at that epoch.
            """
        ),
        code(
            """
            from geonorm_jax.train.checkpoint import RunCheckpoints

            label = "EGNN + GeoNorm"
            run_dir = runs[label][1]
            s = setups[label]
            print(sorted(p.name for p in (run_dir / "checkpoints" / "interval").iterdir()))

            ckpt = RunCheckpoints(run_dir)
            state, meta = ckpt.restore(s.abstract_state())  # newest interval checkpoint
            ckpt.close()


            @jax.jit
            def test_mse(params, batch_stats):
                # the test MSE of every seed, from s.apply(params, batch_stats, batch, training)
                test = s.data["test"]
                predict = lambda p, bs: s.apply(p, bs, test, False)[0]
                pred = jax.vmap(predict)(params, batch_stats)  # [seeds, samples, N, 3]
                return jnp.mean(jnp.square(pred - test["target"]), axis=(1, 2, 3))


            restored = np.asarray(test_mse(state.params, state.batch_stats))
            logged = train.read_metrics(run_dir)[-1]["test_mse"]
            print("epoch", meta["epoch"], "| test MSE restored:", restored, "| logged:", logged)
            assert np.allclose(restored, np.asarray(logged, dtype=float), rtol=1e-4)
            """
        ),
        md(
            """
            The same with orbax directly: save the parameters and running statistics of all
            seeds (a pytree), restore them into the structure of an abstract tree
            (`jax.ShapeDtypeStruct` leaves), and evaluate with them.
            """
        ),
        code(
            """
            import orbax.checkpoint as ocp

            weights = {"params": state.params, "batch_stats": state.batch_stats}  # all seeds
            ckpt_path = RUNS / "weights"
            checkpointer = ocp.StandardCheckpointer()
            checkpointer.save(ckpt_path, weights)
            checkpointer.wait_until_finished()
            abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, weights)
            weights_back = checkpointer.restore(ckpt_path, abstract)

            before = test_mse(weights["params"], weights["batch_stats"])
            after = test_mse(weights_back["params"], weights_back["batch_stats"])
            print("test MSE before saving:", before, "| after restoring:", after)
            assert np.array_equal(np.asarray(before), np.asarray(after))
            """
        ),
        md(
            """
            With `FAST` off, the sizes follow the GeoNorm paper at N = 20 (5 layers, width 64,
            batch 50, learning rate 5e-3), trained for 150 epochs: expect vanilla EGNN seeds to
            explode or plateau high while GeoNorm seeds keep decreasing. The
            `geonorm-jax train` command runs the same trainer from the shell, and
            `geonorm-jax eval RUN_DIR --rte` the same evaluation.
            """
        ),
    ]


# ---------------------------------------------------------------------------------------------
# 03: the geometric match
# ---------------------------------------------------------------------------------------------

NB03 = "03_geometric_match.ipynb"


def notebook_03() -> list:
    return header(
        NB03,
        "Geometric match: which normalization layer fits which task",
        """
        The survey *Geometric Considerations for Normalization Layers in Equivariant Neural
        Networks* proposes one principle for choosing a normalization layer: it must be
        **geometrically matched** to the task. This notebook states the definition, measures it
        for every layer of the catalogue, gives the verdicts for two tasks, and ends with a
        worked example of a mismatched layer hurting training.
        """,
    ) + [
        INSTALL,
        settings(),
        code(
            """
            %matplotlib inline
            import copy
            import pathlib

            import jax
            import jax.numpy as jnp
            import matplotlib.pyplot as plt
            import numpy as np
            from IPython.display import Markdown, display

            import geonorm_jax as gj
            from geonorm_jax import audit, train
            """
        ),
        md(
            r"""
            ## 1. Definition 3 of the survey

            **Definition 1** (*Equivariance and invariance*). If $G$ is a group acting on
            $\mathbb{R}^N$, a function $\psi:\mathbb{R}^N\to\mathbb{R}^N$ is *$G$-equivariant*
            if $\psi(Ax) = A\psi(x)$ for every $A\in G$ and $x\in\mathbb{R}^N$; if instead
            $\psi(Ax) = \psi(x)$, it is *$G$-invariant*.

            **Definition 2** (*Task*). A task is a function $\psi^*(X) = y^*$ from a
            representation $X$ of the input data to a target $y^*$ (a class or a regression
            target).

            > **Definition 3** (*Geometric match and mismatch*). If a neural network is trained
            > to approximate a task, and that task is equivariant or invariant with respect to a
            > group $G$, then the network is **geometrically matched** to the task if:
            >
            > 1. All of its layers are also equivariant or invariant with respect to that group.
            > 2. None of its layers introduce invariances which are not respected by the task.
            >
            > If either condition is violated, then we say that the network is **geometrically
            > mismatched** to the task.

            The survey's four cases are the failures this rules out: BatchNorm couples separate
            molecules (Case 1, the batch is not a group the task has), breaks rotation
            equivariance (Case 2), normalizes angles that carry information (Case 3), and its
            mean subtraction removes task-relevant information (Case 4, an introduced
            invariance).

            `geonorm_jax.audit` makes the definition measurable. For each layer it measures,
            on random inputs in float64 with trained-like parameters:

            * **symmetries** (condition 1): $\max|F(g\cdot x) - g\cdot F(x)| / \max|g\cdot F(x)|$
              for rotations, reflections, translations and permutations, plus batch
              independence (Case 1), padding independence and size consistency;
            * **invariances** (condition 2): the relative output change
              $\max|F(x') - F(x)|/\max|F(x)|$ when the input is rescaled, shifted, rescaled
              node by node, or moved radially about its centroid. A change below $10^{-4}$ means
              the layer discards that quantity.

            A `Task` states the groups of the task and the quantities its target depends on.
            """
        ),
        code(
            """
            for name in ("nbody-dynamics", "molecular-energy"):
                t = audit.TASKS[name]
                print(f"{t.name}: {t.description}")
                print(f"  equivariant to {t.equivariant_to}, invariant to {t.invariant_to}")
                print(f"  depends on {t.depends_on}; samples independent: {t.samples_independent},"
                      f" variable size: {t.variable_size}, size-extensive: {t.size_extensive}")
                print(f"  source: {t.source}")
            """
        ),
        md(
            """
            ## 2. The audit table of the catalogue

            One row per layer, one column per measured property. In FAST mode only a
            representative subset is audited, on one random input per probe (the legend below
            speaks of three); with `FAST` off, the whole catalogue on three inputs (about a
            minute on 2 CPU cores).
            """
        ),
        code(
            """
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
            """
        ),
        md(
            """
            ## 3. Verdicts for two tasks

            The measurements do not depend on the task; `audit.judge` compares them with one.
            **N-body dynamics** (predict positions): the output is E(3)- and
            permutation-equivariant, and it depends on the scale of the system and on where each
            particle sits. **Molecular energy** (QM9/MD17-style): the output is E(3)- and
            permutation-*invariant*, a sum over atoms (so size-consistent), molecules of
            different sizes share a padded batch.
            """
        ),
        code(
            """
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
            display(Markdown("\\n".join(lines)))
            """
        ),
        md(
            """
            Reading the table:

            * **BatchNorm** is mismatched for both: in training mode each sample's output depends
              on the rest of the batch (Case 1).
            * **ScaleNorm** (`scale_norm_l2`) and **LayerNorm on coordinates** break translation
              equivariance (and rotation, for LayerNorm): condition 1 fails for N-body.
            * **GeoNorm** keeps rotations, reflections and translations; the paper's per-particle
              $g_i, b_i$ break permutation equivariance, the shared variant keeps it. Every
              GeoNorm is invariant to the scale of the system, an invariance the N-body task does
              not have (condition 2): the scale must be carried by other paths of the network (in
              EGNN, the invariant features and the edge attributes).
            * A layer matched to one task can be mismatched to the other: size consistency and
              padding matter for molecules, not for a fixed-size N-body system (in the full
              table, `graph_size_norm` and `schnet_neighbor_norm` are matched to N-body
              dynamics but not size-consistent, so mismatched to molecular energy).
            """
        ),
        md(
            r"""
            ## 4. Worked example: a mismatched layer hurts training

            The N-body task does not care where the origin of the coordinate frame is: moving
            every position (input and target) by the same vector $\mathbf{t}$ gives the same
            physics. A network matched to the task (condition 1) then sees the *same* learning
            problem. ScaleNorm, $F(\mathbf{x}_i) = g\,\mathbf{x}_i/\|\mathbf{x}_i\|$, breaks
            translation equivariance: it rescales about the origin, so moving the origin changes
            what the network computes.

            We train EGNN with ScaleNorm (one shared $g$, so the only broken symmetry is
            translation) and with the shared GeoNorm (translation-equivariant), each twice: on
            the data as simulated (centred near the origin), and on the same data moved by
            $\mathbf{t} = (5, 5, 5)$.
            """
        ),
        code(
            """
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
            """
        ),
        code(
            """
            %matplotlib inline
            fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
            for ax, label in zip(axes, layers):
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
            """
        ),
        md(
            """
            With GeoNorm the two curves coincide (up to float32 rounding): the network is
            translation-equivariant, so moving the frame changes nothing it learns. With
            ScaleNorm the same physics in a moved frame is a different, harder learning problem:
            every particle is pushed to distance $|g|$ from an origin that now lies far from the
            system, which erases the system's shape, and the loss is worse. This is condition 1
            of Definition 3 at work. Notebook 02's RTE columns measure the same effect on a
            trained model ($\\Delta T_{err}$).
            """
        ),
    ]


# ---------------------------------------------------------------------------------------------
# 04: Allegro on uracil with and without its normalization
# ---------------------------------------------------------------------------------------------

NB04 = "04_molecules_allegro.ipynb"


def notebook_04() -> list:
    return header(
        NB04,
        "Allegro on uracil, with and without its normalization",
        """
        The survey's Section 4 trains **Allegro** (an e3nn tensor-product interatomic
        potential) on uracil, with and without the normalization its authors describe, and
        finds the losses without it many orders of magnitude higher (Figure 1). This notebook

        1. generates molecular-dynamics frames of uracil: Langevin dynamics at 500 K with
           GFN2-xTB energies and forces (`tblite`), cached;
        2. trains Allegro (`geonorm_jax.models.Allegro`, on e3nn-jax) twice through the same
           trainer as the N-body notebooks: **with** its normalizations (per-species energy
           shift and scale fitted on the training set, `1/sqrt(N̄)` on the environment sums)
           and **without** them;
        3. plots both loss curves on a log scale and compares energy and force errors.
        """,
    ) + [
        INSTALL,
        code(
            """
            # The data generator needs the quantum-chemistry extra (tblite, ase, rdkit).
            import importlib.util
            import subprocess
            import sys

            missing = [m for m in ("tblite", "ase", "rdkit") if importlib.util.find_spec(m) is None]
            if missing:
                subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing], check=True)
            """
        ),
        settings(),
        code(
            """
            %matplotlib inline
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
            """
        ),
        md(
            """
            ## 1. Molecular-dynamics frames

            The geometry is built from the molecule's connectivity (RDKit) and relaxed with
            GFN2-xTB; independent Langevin trajectories (500 K, 0.5 fs) run in parallel and
            keep a frame every `stride` steps. Units: Å, eV, eV/Å. The data set is cached
            under a hash of its settings, and a killed generation resumes.
            """
        ),
        code(
            """
            data_dir = molecules.get_molecular_dataset(DATA, progress=True)
            frames = molecules.load_molecular_dataset(data_dir)
            print(molecules.describe_molecular_dataset(data_dir))

            fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), constrained_layout=True)
            axes[0].plot(frames.energies - frames.energies.mean(), ".", ms=2)
            axes[0].set(xlabel="frame", ylabel="E - mean(E) (eV)", title="energies")
            axes[1].hist(frames.forces.reshape(-1), bins=60)
            axes[1].set(xlabel="force component (eV/Å)", title="forces")
            plt.show()
            """
        ),
        md(
            """
            ## 2. Allegro with and without its normalization

            One configuration differs in two switches only: `target_norm` (the energy of atom
            *i* is `sigma * E_i + mu_Z`, with `mu_Z` a least-squares fit of the training
            energies on the species counts and `sigma` the training force RMS) and
            `neighbor_norm` (Allegro's `1/sqrt(N̄)` on its environment sums, N̄ the mean
            neighbour count of the training frames). The loss is the per-atom energy MSE plus
            the force MSE, in eV² and eV²/Å².
            """
        ),
        code(
            """
            import pathlib
            import tempfile

            runs = pathlib.Path(tempfile.mkdtemp(prefix="allegro_runs_"))
            base = train.merge(train.preset("allegro-uracil"), {
                "molecules": dict(molecule=DATA.molecule, frames=DATA.frames, **SPLIT),
                "model": MODEL, "train": TRAIN})
            summaries = {}
            for name, on in (("with normalization", True), ("without", False)):
                config = train.merge(base, {"model": {"target_norm": on, "neighbor_norm": on}})
                summaries[name] = train.train(config, runs / name.replace(" ", "_"),
                                              data_dir=data_dir)
            info = summaries["with normalization"]["task_info"]
            print(f"N̄ = {info['avg_num_neighbors']:.2f}, sigma = {info['species_scale']:.3f} "
                  f"eV/Å, mean energy {info['energy_mean']:.2f} eV")
            """
        ),
        code(
            """
            fig, ax = plt.subplots(figsize=(7, 4))
            for (name, summary), color in zip(summaries.items(), ("tab:blue", "tab:red")):
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
            """
        ),
        md(
            """
            ## 3. Reading the result

            Without the shift and scale the network must output the raw energy, about -56 eV
            per atom for uracil in GFN2-xTB, from weights initialised for outputs of order 1:
            the loss starts near `(E / A)²`, orders of magnitude above the normalized one,
            and the gap closes only slowly. How many orders depends on the units and on the
            energy zero: the survey's MD17 energies are total DFT energies in kcal/mol,
            whose squares are near 1e11, hence its 11 orders. The experiment
            `python -m experiments.survey_case_studies --preset cpu` separates the two
            normalizations (shift and scale versus `1/sqrt(N̄)`), adds SchNet and a norm zoo
            on Allegro, and states a verdict for each survey claim.
            """
        ),
    ]


NOTEBOOKS = {NB01: notebook_01, NB02: notebook_02, NB03: notebook_03, NB04: notebook_04}


def build(name: str) -> nbformat.NotebookNode:
    nb = v4.new_notebook()
    nb.cells = NOTEBOOKS[name]()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "colab": {"provenance": []},
        "accelerator": "NONE",
    }
    for i, cell in enumerate(nb.cells):  # stable ids: rebuilding gives identical files
        cell["id"] = f"cell-{i:02d}"
    nbformat.validate(nb)
    return nb


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    names = argv or list(NOTEBOOKS)
    for name in names:
        path = HERE / name
        nbformat.write(build(name), path)
        print(f"wrote {path.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
