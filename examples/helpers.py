"""A local module beside the script, not installed: gpar ships what the script uses."""

import numpy as np


def score(row: np.ndarray, n: int) -> float:
    """Mean of the n largest values of a row."""
    return float(np.sort(row)[-n:].mean())
