"""Files written whole: atomic replacement, fsync of folders, the check that a secret
file is not readable by others, and an advisory lock file (``lock.py``).

Checkpoints, the registry, keys, certificates and run folders are written through it, so
a crash leaves the old file or the new one, never half of one. Imports only the standard
library; every other part of ``core`` may use it.
"""
