"""Who and what can be believed.

The consortium's certificate authority, the SuperLink's certificate and the members' key
pairs (PKI); the coordinator's Ed25519 signing key; the signed, versioned model
registry that anyone can verify, its retention and its record of versions in use; the
hash-chained audit log; the code digest of a Flower app bundle. May
import ``config``, ``files`` and ``model`` (the registry stores checkpoints); never
``images``, ``learning``, ``wire``, ``synth`` or ``processes``.
"""
