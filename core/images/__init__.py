"""The image pipeline: from a file or a request's bytes to a normalised tensor.

Safe reading of fracture-surface images (header probing, 8- and 16-bit grayscale
decoding, hashing), the check of a member's folder before it joins, labelled images as
tensors, the split of a pool across members, and the preprocessing that every model
carries. May import ``config`` and ``files``; never ``model``, ``learning``, ``wire``,
``trust``, ``synth`` or ``processes``, so reading an image never pulls in training code,
keys or the wire format (serving vendors part of it into the SageMaker artifact).
"""
