"""Synthetic SEM fracture-surface images, for tests, demos and benchmarks.

Procedural textures per fracture class, SEM artefacts (edge brightening, probe blur,
charging streaks, shot and scan-line noise) and the writer of a synthetic data set split
across members, written whole or not at all. May import ``config`` (the taxonomy),
``files`` (folders written whole) and ``images`` (the split across members); never
``model``, ``learning``, ``wire``, ``trust`` or ``processes``.
"""
