"""A calibrated band without simulation: a conformal adjustment from a rolling backtest.

From each backtest origin the ensemble forecasts the next ``weeks`` values; the score at horizon
h is |log(actual / forecast)|. The band at h is forecast × exp(±q_h), q_h the split-conformal
quantile (rank ceil((n + 1) × level) of n) of the backtest's scores at h. Scores carry how far
real values strayed at each horizon, trend and season misfits included, which the iterative
bootstrap's one-week factors do not.
"""

from __future__ import annotations

import numpy as np

from forecasting_demo.bootstrap import BACKTEST_WEEKS, Band
from forecasting_demo.errors import SeriesTooShort
from forecasting_demo.models import ensemble_forecast, window_length


def horizon_scores(history: np.ndarray, period: float, weeks: int,
                   origins: int = BACKTEST_WEEKS) -> np.ndarray:
    """|log(actual / forecast)|, (origins, weeks), from origins whose ``weeks`` are all known."""
    last = len(history) - weeks
    first = last - origins + 1
    if first < window_length(period):
        raise SeriesTooShort(
            f"a {origins}-origin backtest of {weeks} weeks needs "
            f"{origins - 1 + weeks + window_length(period)} observations, got {len(history)}")
    return np.abs(np.log(np.array([
        history[origin:origin + weeks] / ensemble_forecast(history[:origin], weeks, period)
        for origin in range(first, last + 1)
    ])))


def conformal_bands(history: np.ndarray, period: float, weeks: int, levels: tuple[float, ...],
                    origins: int = BACKTEST_WEEKS) -> list[Band]:
    """One band per level around the ensemble's forecast of the ``weeks`` after ``history``."""
    scores = horizon_scores(history, period, weeks, origins)
    forecast = ensemble_forecast(history, weeks, period)
    n = len(scores)
    bands = []
    for level in levels:
        rank = min(1.0, np.ceil((n + 1) * level) / n)
        half_width = np.quantile(scores, rank, axis=0, method="inverted_cdf")
        bands.append(Band(level, forecast * np.exp(-half_width), forecast * np.exp(half_width)))
    return bands
