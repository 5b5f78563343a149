"""Inference: pre/post-processing (pure functions), model bundles, backends.

Nothing here imports torch; ``tensorrt`` is imported lazily by ``tensorrt_build`` only.
"""
