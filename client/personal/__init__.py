"""A member's own models, beside the federation: a local-only baseline, a personalized
copy of a global version, and the comparison of both with the global model on the
member's own validation split. Nothing here sends anything anywhere."""
