"""What every role agrees on: the typed run configuration and the fracture taxonomy.

The launcher builds :class:`~fractofl.core.config.run_config.RunConfig` from Hydra's
composition of ``conf/``; the Flower apps rebuild the same object from the flat
``context.run_config``. The taxonomy is the ordered class list the consortium shares.
Imports only the standard library: every other part of ``core`` may import it, and it
imports none of them.
"""
