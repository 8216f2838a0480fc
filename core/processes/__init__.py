"""Flower's executables (``flwr``, ``flower-superlink``, ``flower-supernode``) run as child
processes by the coordinator's and the members' commands.

It sits in the shared package because both ``client/`` (the member's SuperNode) and
``server/`` (the coordinator's SuperLink) start them, and those two never import each
other. Imports only the standard library: no flwr, no other part of ``core``.
"""
