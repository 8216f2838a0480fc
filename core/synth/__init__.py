"""Synthetic SEM fracture-surface images, for tests, demos and benchmarks.

Procedural textures per fracture class, SEM artefacts (edge brightening, probe blur,
charging streaks, shot and scan-line noise) and the writer of a synthetic data set split
across members. May import ``config`` (the taxonomy) and ``images`` (the split across
members); never ``files``, ``model``, ``learning``, ``wire``, ``trust`` or
``processes``.
"""
