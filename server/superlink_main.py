"""Flower's SuperLink with its state in SQLite and the messages in flight in memory.

Flower 1.42's SuperLink keeps two things behind one ``--database``: its state (registered
members, runs, message headers) and its object store, where every message's arrays wait
until their receiver has them: each instruction's model, each member's update. With a
SQLite file both go to disk, and a member-sized round (ResNet-18, 45 MB each way per
member) took about twice as long as with Flower's in-memory store (``bench/RESULTS.md``,
member_rounds): every 5 MiB piece is written to the file, read back and deleted once
delivered. This entry point keeps the state in the file, so that registrations and runs
survive a restart, and the objects in memory, where they live only until delivered:
what a restart loses is what was in flight, which the run in flight loses anyway.

Run as ``python -m fractofl.server.superlink_main -- <flower-superlink arguments>``;
``flower-superlink`` itself runs unchanged.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

Factories = Callable[[str, Any], tuple[Any, Any]]
FACTORIES = "get_objectstore_linkstate_factories"  # what Flower 1.42's SuperLink calls


def objects_in_memory(app_main: ModuleType) -> None:
    """Have the SuperLink built by ``app_main`` (Flower's ``flwr.superlink.main``) keep
    its object store in memory while its state goes to the ``--database`` it was given;
    refuse a Flower whose SuperLink no longer builds both there (another version)."""
    build = getattr(app_main, FACTORIES, None)
    if not callable(build):
        raise RuntimeError(
            f"{app_main.__name__} has no {FACTORIES} as Flower 1.42 has; this fractofl was "
            "written for flwr 1.42.0: reinstall fractofl's pinned flwr"
        )
    if getattr(build, "objects_in_memory", False):
        return
    from flwr.server.superlink.linkstate import LinkStateFactory
    from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME
    from flwr.supercore.object_store import ObjectStoreFactory

    def state_on_file_objects_in_memory(database: str, federation_manager: Any) -> Any:
        objects, state = build(database, federation_manager)
        if not isinstance(state, LinkStateFactory) or database == FLWR_IN_MEMORY_DB_NAME:
            return objects, state  # in memory already, or not Flower's own SQLite store
        in_memory = ObjectStoreFactory(FLWR_IN_MEMORY_DB_NAME)
        return in_memory, LinkStateFactory(database, federation_manager, in_memory)

    state_on_file_objects_in_memory.objects_in_memory = True  # type: ignore[attr-defined]
    setattr(app_main, FACTORIES, state_on_file_objects_in_memory)


def flower_arguments(argv: Sequence[str]) -> list[str]:
    """Flower's own arguments: everything after ``--``."""
    arguments = list(argv)
    return arguments[1:] if arguments[:1] == ["--"] else arguments


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``flower-superlink`` with the given arguments, its objects kept in memory."""
    arguments = flower_arguments(sys.argv[1:] if argv is None else argv)
    import flwr.superlink.main as app_main
    from flwr.superlink.cli import flower_superlink

    objects_in_memory(app_main)
    print(
        "fractofl: this SuperLink keeps its state (registrations, runs) in its database "
        "and the arrays of messages in flight in memory (deployment.superlink_store=file)",
        flush=True,
    )
    sys.argv = ["flower-superlink", *arguments]
    flower_superlink()


if __name__ == "__main__":
    main()
