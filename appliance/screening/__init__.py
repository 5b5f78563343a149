"""Screening: the fitness gate, image quality checks and the per-image pipeline."""
