"""The keys a member's Flower node config may carry (``--node-config`` on a SuperNode)."""

DATA_DIR_KEY = "data-dir"  # a real member: its ImageFolder root
PARTITION_KEY = "partition-id"  # a simulated member: its partition of the synthetic set
