"""Networks and the checkpoints that describe them.

The registry of architectures (selected by name, each with its default preprocessing),
the self-describing checkpoint format (architecture and arguments, classes,
preprocessing, round, run id, metrics) and the objects built from a run config. May
import ``config``, ``files`` and ``images`` (a model carries its preprocessing); never
``learning``, ``wire``, ``trust``, ``synth`` or ``processes``.
"""
