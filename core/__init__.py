"""Shared core of fractofl: what the member, the coordinator and serving all need.

One subpackage per concern, each with its own rule of what it may import (its docstring
says it; ``tests/test_layers.py`` enforces it):

- ``config``: the typed run configuration and the fracture taxonomy;
- ``files``: files written whole (atomic replacement, permission checks);
- ``images``: the image pipeline, from a file or request bytes to a normalised tensor;
- ``model``: networks by name, self-describing checkpoints, objects built from a config;
- ``learning``: training and evaluation as plain functions, metrics, device, a member's data;
- ``wire``: what travels between member and coordinator (update encoding and protocol);
- ``trust``: the consortium's PKI, the signing key and the signed model registry;
- ``synth``: the synthetic SEM fracture-surface generator for tests and demos;
- ``processes``: running Flower's executables as child processes.

The whole package imports only the standard library, numpy, PIL, torch, torchvision and
cryptography: never flwr or Hydra.
"""
