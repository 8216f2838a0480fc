"""Shared core of fractofl: taxonomy, models, preprocessing, data and checkpoints.

Imports only the standard library, numpy, PIL, torch and torchvision: never flwr or Hydra.
"""
