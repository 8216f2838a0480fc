"""The coordinator's Flower ServerApp: reads the flat run config and runs the rounds."""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fractofl.core.config.run_config import from_flat
from fractofl.server.coordinator import run_federated
from fractofl.server.packed_grid import PackedGrid

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point Flower calls in simulation and in deployment alike."""
    cfg = from_flat(context.run_config)
    if cfg.updates.pack_arrays:
        grid = PackedGrid(grid)
    run_federated(grid, cfg, run_id=str(context.run_id))
