"""What travels between a member and the coordinator.

The encoding of a member's update (the weight delta as float32, float16 or int8 with a
per-tensor scale, optionally top-k) and the protocol by which the coordinator's train
config says which encoding to send. numpy only: the coordinator decodes and screens
updates without building a model. May import ``config``; never ``files``, ``images``,
``model``, ``learning``, ``trust``, ``synth`` or ``processes``.
"""
