"""How often bands hold what happened next: coverage and Winkler scores on yearly hold-outs.

Hold-out 1 of a series scores bands from the history before its last ``weeks`` values against
those values; each next hold-out does the same a year earlier. Every method sees only the
history before its hold-out: the bootstrap's factors and the conformal scores come from
backtests inside it.

    paper       iterative bootstrap, independent one-week factors (paper §5.4)
    block       iterative bootstrap, blocks of consecutive one-week factors
    conformal   the ensemble's forecast widened by backtest scores at each horizon
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecasting_demo import bootstrap, conformal
from forecasting_demo.bootstrap import Band, Scenario, quantile_band
from forecasting_demo.data import Series

LEVELS = (0.95, 0.8)
METHODS = (*bootstrap.METHODS, "conformal")
#: Weeks ahead grouped for the coverage table: quarters of the year ahead.
BLOCK_WEEKS = 13
#: R's forecast package (8.20) on these same hold-outs: mean Winkler 95 % score ÷ actual, by
#: series and method (dynamic harmonic regression: auto.arima with Fourier terms, K by AICc).
R_WINKLER_95_PER_ACTUAL = {
    "gasoline": {"R dynamic harmonic regression": 0.156, "R stlf": 0.158},
    "co2": {"R dynamic harmonic regression": 0.0087, "R stlf": 0.0086},
}


@dataclass(frozen=True, eq=False)
class Holdout:
    series: str
    years_back: int
    history: np.ndarray
    actual: np.ndarray
    period: float


def holdouts(series: Series, years: int, weeks: int) -> list[Holdout]:
    """The last ``years`` yearly hold-outs of a series, the most recent first."""
    step = round(series.period)
    ends = [len(series.values) - weeks - step * (k - 1) for k in range(1, years + 1)]
    return [Holdout(series.name, k, series.values[:end], series.values[end:end + weeks],
                    series.period) for k, end in enumerate(ends, start=1)]


def winkler(band: Band, actual: np.ndarray) -> np.ndarray:
    """The interval score at each week: width, plus 2/alpha times any distance outside."""
    alpha = 1 - band.level
    below = np.maximum(band.lower - actual, 0)
    above = np.maximum(actual - band.upper, 0)
    return band.upper - band.lower + 2 / alpha * (below + above)


def covered(band: Band, actual: np.ndarray) -> np.ndarray:
    return (band.lower <= actual) & (actual <= band.upper)


def score_rows(holdout: Holdout, method: str, bands: list[Band]) -> list[dict]:
    """One row per (level, week ahead): was the actual inside, its Winkler score, and that
    score ÷ the actual (unit-free: comparable across series and with published scores)."""
    weeks = np.arange(1, len(holdout.actual) + 1)
    return [
        {"series": holdout.series, "years_back": holdout.years_back, "method": method,
         "level": band.level, "week": int(week), "covered": bool(inside),
         "winkler": float(score), "winkler_ratio": float(score / actual)}
        for band in bands
        for week, inside, score, actual in zip(weeks, covered(band, holdout.actual),
                                               winkler(band, holdout.actual), holdout.actual,
                                               strict=True)
    ]


def measure(series: list[Series], years: int, realizations: int, weeks: int, seed: int,
            **apply_options) -> tuple[pd.DataFrame, object]:
    """Score every method on every hold-out: (one row per hold-out × method × level × week,
    the gpar Results of the bootstrap job)."""
    cases = [holdout for one in series for holdout in holdouts(one, years, weeks)]
    scenarios = []
    for holdout in cases:
        factors = bootstrap.one_step_factors(holdout.history, holdout.period)
        scenarios += [Scenario(holdout.history, factors, holdout.period, method)
                      for method in bootstrap.METHODS]
    paths, results = bootstrap.run_realizations(scenarios, realizations, weeks, seed,
                                                **apply_options)
    rows = []
    simulated = [holdout for holdout in cases for _ in bootstrap.METHODS]
    for index, (holdout, scenario) in enumerate(zip(simulated, scenarios, strict=True)):
        bands = [quantile_band(paths[index], level) for level in LEVELS]
        rows += score_rows(holdout, scenario.method, bands)
    backtests = {one.name: conformal.backtest(one.values, one.period, weeks) for one in series}
    for holdout in cases:
        bands = conformal.conformal_bands(holdout.history, holdout.period, weeks, LEVELS,
                                          backtests[holdout.series])
        rows += score_rows(holdout, "conformal", bands)
    return pd.DataFrame(rows), results


def summary(scores: pd.DataFrame) -> pd.DataFrame:
    """Coverage, mean Winkler score and mean Winkler score ÷ actual by series (and "all" of them
    pooled), method, level and block of weeks ahead (and "all" weeks), with the standard error of
    the coverage across hold-outs: a hold-out's weeks share one path, so the hold-out is the unit
    of sampling."""
    blocks = (scores.week - 1) // BLOCK_WEEKS
    labelled = scores.assign(
        weeks=[f"{BLOCK_WEEKS * b + 1}-{BLOCK_WEEKS * (b + 1)}" for b in blocks],
        holdout=scores.series + "/" + scores.years_back.astype(str))
    if scores.series.nunique() > 1:
        labelled = pd.concat([labelled, labelled.assign(series="all")])
    labelled = pd.concat([labelled, labelled.assign(weeks="all")])
    keys = ["series", "method", "level", "weeks"]
    measured = ["covered", "winkler", "winkler_ratio"]
    per_holdout = labelled.groupby([*keys, "holdout"], sort=False)[measured].mean()
    table = per_holdout.groupby(keys, sort=False).agg(
        coverage=("covered", "mean"), coverage_se=("covered", "sem"), winkler=("winkler", "mean"),
        winkler_ratio=("winkler_ratio", "mean"))
    return table.reset_index()
