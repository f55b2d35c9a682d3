"""A calibrated band without simulation: a conformal adjustment from a rolling backtest.

From each backtest origin the ensemble forecasts the next ``weeks`` values; the score at horizon
h is |log(actual / forecast)|. The band at h is forecast × exp(±q_h), q_h the split-conformal
quantile (rank ceil((n + 1) × level) of n) of the backtest's scores at h. Scores carry how far
real values strayed at each horizon, trend and season misfits included, which the iterative
bootstrap's one-week factors do not.

The backtest uses every origin the history allows. A 95 % quantile rests on the few rough years
(a recession, an El Niño), and weekly origins less than a year apart share their errors: five
years of origins hold about five independent paths, too few for that quantile. On the report's
ten yearly hold-outs of each series, with the demo's first ensemble, the last five years of
origins covered 92.4 % of the weeks, every origin 95.2 % (chosen with those hold-outs in view;
bench/bench_calibration.py also checks the band on the M3 quarterly series, which no choice
saw).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forecasting_demo.bootstrap import Band
from forecasting_demo.errors import NonPositiveForecast, SeriesTooShort
from forecasting_demo.models import ensemble_forecast, minimum_length


@dataclass(frozen=True, eq=False)
class Backtest:
    """The ensemble's scores from every origin of one series: computed once, cut at any end."""

    first: int  # the origin of row 0: the first with a full fitting window
    scores: np.ndarray  # (origins, weeks)

    def before(self, end: int) -> np.ndarray:
        """The scores of the origins whose weeks all lie before ``end``."""
        weeks = self.scores.shape[1]
        return self.scores[:max(end - weeks - self.first + 1, 0)]


def backtest(values: np.ndarray, period: float, weeks: int) -> Backtest:
    """Scores from every origin with a full fitting window. Where the ensemble forecast a value
    <= 0 the log ratio is undefined; the score is infinite, the conservative reading of such a
    miss (if more than 1 - level of the origins have one, the band is unbounded)."""
    first = minimum_length(period)
    origins = range(first, len(values) - weeks + 1)
    shape = (len(origins), weeks)  # (0, weeks), not (0,), when the series has no origin
    forecasts = np.array([ensemble_forecast(values[:origin], weeks, period)
                          for origin in origins]).reshape(shape)
    actuals = np.array([values[origin:origin + weeks] for origin in origins]).reshape(shape)
    scores = np.full(forecasts.shape, np.inf)
    positive = forecasts > 0
    scores[positive] = np.abs(np.log(actuals[positive] / forecasts[positive]))
    return Backtest(first, scores)


def conformal_bands(history: np.ndarray, period: float, weeks: int, levels: tuple[float, ...],
                    scored: Backtest | None = None) -> list[Band]:
    """One band per level around the ensemble's forecast of the ``weeks`` after ``history``.

    ``scored`` is a backtest of a series that ``history`` begins; only the origins before the
    end of ``history`` count. Without it the backtest runs on ``history``.
    """
    if scored is None:
        scored = backtest(history, period, weeks)
    scores = scored.before(len(history))
    n = len(scores)
    if n == 0:
        raise SeriesTooShort(f"a {weeks}-week backtest needs at least "
                             f"{minimum_length(period) + weeks} observations, got {len(history)}")
    forecast = ensemble_forecast(history, weeks, period)
    if (forecast <= 0).any():
        week = int(np.argmax(forecast <= 0))
        raise NonPositiveForecast(
            f"the ensemble forecast {forecast[week]:.4g} for week {week + 1}: a band of "
            "forecast × exp(±q) needs a positive forecast (is the series falling to zero?)")
    bands = []
    for level in levels:
        # with fewer than level / (1 - level) scores the rank passes n: take the largest
        rank = min(1.0, np.ceil((n + 1) * level) / n)
        half_width = np.quantile(scores, rank, axis=0, method="inverted_cdf")
        bands.append(Band(level, forecast * np.exp(-half_width), forecast * np.exp(half_width)))
    return bands
