"""Training recipes for the shipped models (needs the ``[train]`` extra: torch)."""
