"""How a linear classifier is trained: the protocols and their settings.

Plain Python (no torch), so the command-line parser -- and with it `simclr queue work` and
`simclr sweep` -- starts without importing torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

PROTOCOLS = ("lbfgs", "adam")
#: L2 strengths tried by the lbfgs protocol, strongest first (each fit warm-starts the next)
L2_GRID: tuple[float, ...] = tuple(10.0 ** -e for e in range(7))


@dataclass
class LinearSettings:
    """How a linear classifier is trained; saved with every result."""

    protocol: str = "lbfgs"
    # lbfgs
    l2: float | None = None               # None: choose from l2_grid on the held-out part
    l2_grid: tuple[float, ...] = L2_GRID
    holdout: float = 0.1                   # fraction of the training split held out for l2
    max_iter: int = 1000                   # L-BFGS iterations per fit (it stops earlier when converged)
    # adam
    epochs: int = 500
    batch_size: int = 256
    lr: float = 3e-4
    seed: int = 0

    def to_dict(self) -> dict:
        """The settings that matter for this protocol."""
        keys = (("l2", "l2_grid", "holdout", "max_iter") if self.protocol == "lbfgs"
                else ("epochs", "batch_size", "lr"))
        d = asdict(self)
        return {"protocol": self.protocol, **{k: d[k] for k in keys}, "seed": self.seed}
