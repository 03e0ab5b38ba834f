"""The cells every notebook starts with, in one place.

``build.py`` puts the cell tagged ``install`` (install geonorm-jax only where it is missing) and
the cell tagged ``fast`` (the ``FAST`` switch) where a notebook's source has a cell with the same
tag. Imported as a module (``import _setup``, what a source does when run as a script), it does
the same work.
"""

# %% tags=["install"]
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
        source = ["geonorm-jax @ git+https://github.com/geonorm-jax/geonorm-jax"]
    else:
        raise ImportError("geonorm_jax is not installed: pip install 'geonorm-jax @ git+https://github.com/geonorm-jax/geonorm-jax'")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *source], check=True)

# %% tags=["fast"]
import os
import tempfile

# FAST=True shrinks every size so the notebook runs in well under a minute on 2 CPU
# cores (CI sets GEONORM_JAX_FAST=1). Leave it off for results that mean something.
FAST = os.environ.get("GEONORM_JAX_FAST", "0") == "1"
if FAST:  # generated data sets go to a throw-away cache
    os.environ.setdefault("GEONORM_JAX_CACHE", tempfile.mkdtemp(prefix="geonorm_cache_"))
print("FAST mode" if FAST else "full mode")
