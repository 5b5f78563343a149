"""Inference: pre/post-processing (pure functions), model bundles, backends, and the
TensorRT engines kept matched to this device (``engines/``).

Nothing here imports torch; ``tensorrt`` is imported lazily by ``tensorrt_build`` only.
"""
