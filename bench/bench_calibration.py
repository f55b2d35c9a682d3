"""Calibration of the demo's bands on held-out years, at the demo's default sizes.

The paper's bootstrap, the block bootstrap and the conformal band (calibration.measure, as the
demo runs it), and beside them the conformal band from the last BACKTEST_WEEKS origins only: the
backtest length the bootstrap uses, which the conformal band's every-origin backtest replaced.
That choice, and the ensemble's members, were made on the weekly hold-outs (the members also on
M3 monthly's point forecasts); the M3 quarterly series, which no choice saw, check the conformal
band out of sample on M3's own 8-quarter test periods, and M3 monthly on its 18-month ones.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

import gpar
from forecasting_demo import calibration, conformal, data, evaluation
from forecasting_demo.bootstrap import BACKTEST_WEEKS
from forecasting_demo.errors import NonPositiveForecast, SeriesTooShort
from forecasting_demo.models import minimum_length
from forecasting_demo.pipeline import DemoConfig

DEFAULTS = DemoConfig(out=".")
SHORT = f"conformal, last {BACKTEST_WEEKS} origins"


def short_conformal_rows(series: list[data.Series]) -> list[dict]:
    weeks, rows = DEFAULTS.weeks, []
    for one in series:
        scored = conformal.backtest(one.values, one.period, weeks)
        for holdout in calibration.holdouts(one, DEFAULTS.holdout_years, weeks):
            end = len(holdout.history)
            last = conformal.Backtest(end - weeks - BACKTEST_WEEKS + 1,
                                      scored.before(end)[-BACKTEST_WEEKS:])
            bands = conformal.conformal_bands(holdout.history, holdout.period, weeks,
                                              calibration.LEVELS, last)
            rows += calibration.score_rows(holdout, SHORT, bands)
    return rows


def m3_coverage(series: data.M3Series, period: int) -> dict:
    """Share of M3's test periods inside each conformal band, or why the series has no band."""
    history = series.values[:series.training_length]
    actual = series.values[series.training_length:]
    try:
        bands = conformal.conformal_bands(history, period, len(actual), calibration.LEVELS)
    except SeriesTooShort:
        return {"outcome": "too short"}
    except NonPositiveForecast:
        return {"outcome": "forecast <= 0"}
    # an infinite backtest score (a forecast <= 0 there) can make a band unbounded
    return {"outcome": "scored", "unbounded": bool(np.isinf(bands[0].upper).any()),
            **{band.level: calibration.covered(band, actual).mean() for band in bands}}


def main():
    series = [data.demo_series(name) for name in data.DEMO_SERIES]
    started = time.perf_counter()
    scores, _ = calibration.measure(series, DEFAULTS.holdout_years,
                                    DEFAULTS.calibration_realizations, DEFAULTS.weeks,
                                    DEFAULTS.seed, progress=False)
    wall = time.perf_counter() - started
    scores = pd.concat([scores, pd.DataFrame(short_conformal_rows(series))])
    table = calibration.summary(scores).query("weeks == 'all'").set_index(
        ["series", "method", "level"])
    lines = [
        "## Calibration of the demo's bands on held-out years (`bench/bench_calibration.py`)",
        "",
        f"{DEFAULTS.holdout_years} yearly hold-outs of each of {', '.join(data.DEMO_SERIES)} "
        f"({DEFAULTS.weeks} weeks each; every method sees only the weeks before its hold-out), "
        f"{DEFAULTS.calibration_realizations} realizations per bootstrap band; "
        f"calibration.measure took {wall:.1f} s. Share of held-out weeks inside the nominal "
        "band ± its standard error across hold-outs (percentage points), mean Winkler score of "
        "the 95 % band (lower is better) and its mean ratio to the actual value. Targets for "
        "the calibrated (conformal) band, on each series: >= 92 % inside the 95 % band, >= 76 % "
        "inside the 80 % band, Winkler 95 % ÷ actual <= R's dynamic harmonic regression on the "
        "same hold-outs (" + ", ".join(
            f"{name} {calibration.R_WINKLER_95_PER_ACTUAL[name]['R dynamic harmonic regression']}"
            for name in data.DEMO_SERIES) + ").",
        "",
        "| series | method | 95 % band | 80 % band | Winkler 95 % | Winkler 95 % ÷ actual |",
        "|---|---|---|---|---|---|",
    ]
    for name in [*data.DEMO_SERIES, "all"]:
        for method in [*calibration.METHODS, SHORT]:
            at_95, at_80 = table.loc[(name, method, 0.95)], table.loc[(name, method, 0.8)]
            winkler = "—" if name == "all" else f"{at_95.winkler:.3f}"  # units differ
            lines.append(f"| {name} | {method} | {at_95.coverage:.1%} ± "
                         f"{at_95.coverage_se * 100:.1f} | {at_80.coverage:.1%} | {winkler} | "
                         f"{at_95.winkler_ratio:.4f} |")
    lines += ["", f"The conformal band's backtest length (every origin, not the last "
              f"{BACKTEST_WEEKS}) was chosen on these same weekly hold-outs, and the ensemble's "
              "members on them and on M3 monthly's point forecasts. The conformal band on M3, "
              "each series from its training part (every origin), scored on M3's test periods; "
              "quarterly is out of sample for every choice:", ""]
    for label, m3_series, period in (
            ("M3 quarterly", data.m3_quarterly(), evaluation.QUARTERLY_PERIOD),
            ("M3 monthly", data.m3_monthly(), evaluation.PERIOD)):
        m3_started = time.perf_counter()
        m3 = pd.DataFrame(gpar.apply(m3_series, m3_coverage, period, progress=False))
        lines.append(_m3_line(label, m3, period, time.perf_counter() - m3_started))
    print("\n".join(lines))


def _m3_line(label: str, m3: pd.DataFrame, period: int, wall_s: float) -> str:
    outcomes = m3.outcome.value_counts()
    scored = m3[m3.outcome == "scored"]
    bounded = scored[~scored.unbounded.astype(bool)]
    horizon = {evaluation.PERIOD: evaluation.HORIZON}.get(period, evaluation.QUARTERLY_HORIZON)
    return (
        f"* {label} ({wall_s:.1f} s with gpar.apply): of {len(m3):,} series, "
        f"{outcomes.get('scored', 0):,} have a band, {outcomes.get('too short', 0):,} are "
        f"shorter than {minimum_length(period) + horizon} periods and "
        f"{outcomes.get('forecast <= 0', 0):,} forecast a value <= 0. Inside the 95 % band: "
        f"{_share(scored[0.95])}; inside the 80 % band: {_share(scored[0.8])} (± standard "
        f"errors across series). {len(scored) - len(bounded)} of the 95 % bands are unbounded "
        "(a backtest forecast <= 0 scores an infinite miss); without those series, "
        f"{_share(bounded[0.95])} inside the 95 % band.")


def _share(values: pd.Series) -> str:
    return f"{values.mean():.1%} ± {values.sem() * 100:.1f}"


if __name__ == "__main__":
    main()
