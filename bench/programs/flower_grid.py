"""A real Flower in-memory Grid with registered nodes, as the Simulation Engine builds one.

Same recipe as ``tests/strategies/flower_grid.py`` (the benchmark does not import the
test suite): strategies sample nodes from a Grid in ``configure_train``.
"""

from __future__ import annotations

import secrets

from flwr.common.constant import HEARTBEAT_INTERVAL_INF, NOOP_ACCOUNT_NAME, NOOP_FLWR_AID
from flwr.proto.task_pb2 import Task
from flwr.server.superlink.linkstate import InMemoryLinkState, LinkStateFactory
from flwr.server.superlink.linkstate.in_memory_linkstate import RunRecord
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.superlink.federation import NoOpFederationManager
from flwr.superlink.grid import InMemoryGrid

RUN_ID = 4243


def grid_with_nodes(count: int) -> InMemoryGrid:
    """A Grid whose run has ``count`` connected nodes."""
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = RUN_ID, 1, 0
    factory = LinkStateFactory(
        FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory()
    )
    state = factory.state()
    if not isinstance(state, InMemoryLinkState):
        raise TypeError(f"expected an in-memory link state, got {type(state).__name__}")
    run = Run.create_empty(run_id=RUN_ID)
    run.primary_task_id = 1
    run.federation_id = NOOP_FEDERATION_ID
    state.run_ids[RUN_ID] = RunRecord(run=run)
    state.task_store[1] = Task(task_id=1, run_id=RUN_ID)
    for _ in range(count):
        node = state.create_node(
            NOOP_FLWR_AID, NOOP_ACCOUNT_NAME, secrets.token_bytes(32), HEARTBEAT_INTERVAL_INF
        )
        state.acknowledge_node_heartbeat(node_id=node, heartbeat_interval=HEARTBEAT_INTERVAL_INF)
    grid = InMemoryGrid(state_factory=factory)
    grid.set_run(run)
    return grid
