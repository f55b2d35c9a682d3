"""envpack: the worker image, built from the distributions and local modules the caller uses."""
