"""Experiments reproducing the EGNN and GeoNorm papers (one module per figure/table).

Each module has ``main(argv)`` with ``--preset {test,cpu,paper}`` and writes
``experiments/results/<name>/results.json`` plus PNG plots; :mod:`experiments.report` turns
those JSON files into the results section of ``experiments/README.md``.
"""
