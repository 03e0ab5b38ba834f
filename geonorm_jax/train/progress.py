"""A dependency-free progress bar on stderr: epoch, bar, loss, validation MSE, elapsed/ETA.

On a terminal the bar is redrawn in place (``\\r``); otherwise (logs, CI) one line is printed
at each evaluation and at the end.
"""

from __future__ import annotations

import sys
import time

__all__ = ["Progress", "format_time"]


def format_time(seconds: float) -> str:
    """``m:ss`` or ``h:mm:ss``."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """``Progress(total_epochs, start_epoch)``; call :meth:`update` after each epoch."""

    def __init__(self, total: int, start: int = 0, *, stream=None, enabled: bool = True,
                 width: int = 24):
        self.total, self.start, self.width = total, start, width
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and getattr(self.stream, "isatty", lambda: False)()
        self.t0 = time.perf_counter()
        self.val: float | None = None

    def update(self, epoch: int, loss: float | None, val: float | None = None,
               note: str = "") -> None:
        if not self.enabled:
            return
        if val is not None:
            self.val = val
        elapsed = time.perf_counter() - self.t0
        done = epoch - self.start
        eta = elapsed / done * (self.total - epoch) if done > 0 else 0.0
        filled = int(self.width * epoch / max(self.total, 1))
        bar = "#" * filled + "." * (self.width - filled)
        loss_s = f"{loss:.3e}" if loss is not None else "   n/a   "
        val_s = f"  val {self.val:.3e}" if self.val is not None else ""
        line = (f"epoch {epoch:>{len(str(self.total))}}/{self.total} [{bar}] loss {loss_s}"
                f"{val_s}  {format_time(elapsed)}<{format_time(eta)}{note}")
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
            self.stream.flush()
        elif val is not None or epoch == self.total:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
