"""The velocity EGNN of Satorras et al. (2021) in PyTorch, written after the official code's
structure (vgsatorras/egnn: ``models/gcl.py`` ``E_GCL_vel``, ``n_body_system/model.py``
``EGNN_vel``), timed for one Adam training step. Run with an interpreter that has ``torch``
(not this package's)::

    python torch_egnn.py N BATCH LAYERS STEPS THREADS

What the official model does, and this one with it: the fully connected graph as an edge
list over the ``B N`` nodes (``B N (N - 1)`` edges ``(row, col)``), edge attributes
``[q_i q_j, ||x_i - x_j||^2]`` of the input positions, the node feature ``||v||`` embedded by
``Linear(1, H)``, and per layer: ``m_ij = SiLU(Linear(SiLU(Linear([h_i, h_j, ||x_i - x_j||^2,
e_ij]))))`` (the concatenation is multiplied as one ``(2H + 3) x H`` matrix on every edge,
not factorised per node), ``trans_ij = clamp((x_i - x_j) Linear(SiLU(Linear(m_ij))), ±100)``
with the last layer bias-free (xavier gain 0.001), ``x_i += mean_j trans_ij``
(``index_add_`` and the neighbour count), ``x_i += Linear(SiLU(Linear(h_i))) v_i`` with this
layer's input ``h``, ``h_i += Linear(SiLU(Linear([h_i, sum_j m_ij])))``. The loss is the
MSE of the output positions; one ``torch.optim.Adam`` step (lr 5e-4). Float32, CPU,
``torch.set_num_threads(THREADS)``; one untimed step, then ``STEPS`` timed steps.

Prints one JSON line: ``times_s``, ``compile_s`` (0: eager), ``loss``, ``threads``, ``torch``.
"""

from __future__ import annotations

import json
import sys
import time

import torch
from torch import nn


class EGCLVel(nn.Module):
    """One ``E_GCL_vel`` layer (see the module docstring)."""

    def __init__(self, hidden: int, edge_attr: int = 2):
        super().__init__()
        act = nn.SiLU()
        self.edge_mlp = nn.Sequential(nn.Linear(2 * hidden + 1 + edge_attr, hidden), act,
                                      nn.Linear(hidden, hidden), act)
        out = nn.Linear(hidden, 1, bias=False)
        nn.init.xavier_uniform_(out.weight, gain=0.001)
        self.coord_mlp = nn.Sequential(nn.Linear(hidden, hidden), act, out)
        self.coord_mlp_vel = nn.Sequential(nn.Linear(hidden, hidden), act, nn.Linear(hidden, 1))
        self.node_mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), act,
                                      nn.Linear(hidden, hidden))

    def forward(self, h, x, v, row, col, edge_attr, count):
        diff = x[row] - x[col]  # [E, 3]
        radial = (diff**2).sum(-1, keepdim=True)
        m = self.edge_mlp(torch.cat([h[row], h[col], radial, edge_attr], dim=1))  # [E, H]
        trans = torch.clamp(diff * self.coord_mlp(m), -100.0, 100.0)
        agg = torch.zeros_like(x).index_add_(0, row, trans) / count  # mean over senders
        x = x + agg + self.coord_mlp_vel(h) * v
        msum = torch.zeros_like(h).index_add_(0, row, m)
        h = h + self.node_mlp(torch.cat([h, msum], dim=1))
        return h, x


class EGNNVel(nn.Module):
    """``EGNN_vel``: embedding of ``||v||`` and ``layers`` :class:`EGCLVel`; returns ``x``."""

    def __init__(self, hidden: int = 64, layers: int = 4):
        super().__init__()
        self.embedding = nn.Linear(1, hidden)
        self.layers = nn.ModuleList(EGCLVel(hidden) for _ in range(layers))

    def forward(self, x, v, row, col, edge_attr, count):
        h = self.embedding(torch.linalg.norm(v, dim=-1, keepdim=True))
        for layer in self.layers:
            h, x = layer(h, x, v, row, col, edge_attr, count)
        return x


def fully_connected(batch: int, n: int):
    """``(row, col)`` of every ordered pair ``i != j`` within each of ``batch`` graphs."""
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    keep = i != j
    offsets = (torch.arange(batch) * n)[:, None]
    return (i[keep][None] + offsets).reshape(-1), (j[keep][None] + offsets).reshape(-1)


def main(n: int, batch: int, layers: int, steps: int, threads: int) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    x = torch.randn(batch * n, 3) * (n / 5) ** (1 / 3)
    v = torch.randn(batch * n, 3)
    v = 0.5 * v / torch.linalg.norm(v, dim=-1, keepdim=True)
    q = torch.where(torch.rand(batch * n, 1) < 0.5, 1.0, -1.0)
    row, col = fully_connected(batch, n)
    edge_attr = torch.cat([q[row] * q[col], ((x[row] - x[col]) ** 2).sum(-1, keepdim=True)],
                          dim=1)
    count = torch.full((batch * n, 1), float(n - 1))
    target = x + 0.1 * v
    model = EGNNVel(64, layers)
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = ((model(x, v, row, col, edge_attr, count) - target) ** 2).mean()
        loss.backward()
        opt.step()
        return float(loss.detach())

    step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t)
    return {"times_s": times, "compile_s": 0.0, "loss": loss, "threads": threads,
            "torch": torch.__version__, "edge_chunk": "eager (no chunks)"}


if __name__ == "__main__":
    print(json.dumps(main(*(int(a) for a in sys.argv[1:6]))))
