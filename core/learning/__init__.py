"""Learning as plain functions that know nothing of Flower.

Training and evaluation loops, classification metrics, the device choice (CUDA when
present) and seeding, and a member's images decoded once and split into training and
validation. May import ``config``, ``files``, ``images`` and ``model``; never ``wire``,
``trust``, ``synth`` or ``processes``.
"""
