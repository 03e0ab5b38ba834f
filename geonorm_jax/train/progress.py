"""The trainer's epoch progress bar (``tqdm.auto``: a widget in Jupyter and Colab, text
elsewhere)."""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

__all__ = ["EpochBar"]


class EpochBar:
    """The epoch bar on ``stream``, a ``tqdm.auto`` bar::

        epoch 3/10 [#####.....] 30% loss=1.2e-02, val=1.5e-02, best=1.4e-02 1.2epoch/s 0:02<0:05

    ``loss`` is the mean train loss of this epoch over live seeds, ``val`` the mean validation
    MSE of the last evaluation, ``best`` the lowest ``best_val`` of any seed so far.
    """

    def __init__(self, total: int, start: int, stream, enabled: bool):
        self.val: str | None = None
        self.best: float | None = None
        self.bar = tqdm(
            total=total,
            initial=start,
            desc="epoch",
            unit="epoch",
            file=stream,
            disable=not enabled,
            dynamic_ncols=True,
            bar_format="{desc} {n_fmt}/{total_fmt} [{bar}] {percentage:3.0f}%{postfix} "
            "{rate_fmt} {elapsed}<{remaining}",
        )

    def update(self, record: dict) -> None:
        """Advance by one epoch and show ``record``'s losses (a metrics.jsonl record)."""
        live = [x for x in record["train_loss"] if x is not None]
        vals = [x for x in record.get("val_mse", []) if x is not None]
        bests = [x for x in record.get("best_val", []) if x is not None]
        if vals:
            self.val = f"{np.mean(vals):.3e}"
        if bests:
            self.best = min(bests) if self.best is None else min(self.best, *bests)
        postfix = {"loss": f"{np.mean(live):.3e}" if live else "n/a"}
        if self.val is not None:
            postfix["val"] = self.val
        if self.best is not None:
            postfix["best"] = f"{self.best:.3e}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
