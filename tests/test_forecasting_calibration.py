"""Calibration: hold-outs without leakage, the Winkler score, the conformal band's quantile."""

import math

import numpy as np
import pandas as pd
import pytest

from forecasting_demo import calibration, conformal, data, models
from forecasting_demo.bootstrap import Band
from forecasting_demo.errors import NonPositiveForecast, SeriesTooShort

PERIOD = 12


def test_holdouts_step_back_a_year_and_never_show_a_method_the_weeks_it_is_scored_on():
    values = np.arange(1000.0)
    series = data.Series("s", "test", "u", pd.DatetimeIndex([]), values, 52.0)
    cases = calibration.holdouts(series, years=3, weeks=52)
    assert [case.years_back for case in cases] == [1, 2, 3]
    for k, case in enumerate(cases):
        end = 1000 - 52 - 52 * k
        assert case.history[-1] == end - 1 and case.actual.tolist() == list(range(end,
                                                                                  end + 52))


def test_winkler_score_is_width_plus_two_over_alpha_times_the_miss():
    band = Band(0.8, np.array([1.0, 1.0, 1.0]), np.array([3.0, 3.0, 3.0]))
    actual = np.array([2.0, 0.5, 4.0])
    # width 2; alpha 0.2 so a miss of d costs 10 d
    np.testing.assert_allclose(calibration.winkler(band, actual), [2.0, 7.0, 12.0])
    assert calibration.covered(band, actual).tolist() == [True, False, False]
    holdout = calibration.Holdout("s", 1, np.ones(3), actual, 52.0)
    rows = calibration.score_rows(holdout, "paper", [band])
    assert [row["winkler_ratio"] for row in rows] == pytest.approx([1.0, 14.0, 3.0])


def test_summary_gives_coverage_and_winkler_by_block_of_weeks_and_overall():
    rows = [{"series": "s", "years_back": 1, "method": "paper", "level": 0.95, "week": week,
             "covered": week <= 13, "winkler": float(week), "winkler_ratio": week / 100}
            for week in range(1, 27)]
    table = calibration.summary(pd.DataFrame(rows)).set_index("weeks")
    assert table.coverage.to_dict() == {"1-13": 1.0, "14-26": 0.0, "all": 0.5}
    assert table.winkler["1-13"] == 7.0 and table.winkler["all"] == 13.5
    assert table.winkler_ratio["all"] == pytest.approx(0.135)
    other = [{**row, "series": "t", "covered": True} for row in rows]
    pooled = calibration.summary(pd.DataFrame(rows + other)).query("series == 'all'")
    assert pooled.set_index("weeks").coverage.to_dict() == {"1-13": 1.0, "14-26": 0.5,
                                                            "all": 0.75}


def test_summary_takes_the_coverage_standard_error_across_hold_outs():
    rows = [{"series": "s", "years_back": years_back, "method": "paper", "level": 0.95,
             "week": week, "covered": week <= cover, "winkler": 1.0, "winkler_ratio": 0.1}
            for years_back, cover in ((1, 4), (2, 2)) for week in range(1, 5)]
    row = calibration.summary(pd.DataFrame(rows)).query("weeks == 'all'").iloc[0]
    # hold-outs covered 1.0 and 0.5: mean 0.75, standard error 0.5 / sqrt(2) / sqrt(2)
    assert row.coverage == 0.75 and row.coverage_se == pytest.approx(0.25)
    # pooled, hold-out 1 of series s and hold-out 1 of series t are two hold-outs
    other = [{**row, "series": "t", "covered": False} for row in rows if row["years_back"] == 1]
    pooled = calibration.summary(pd.DataFrame(rows + other)).query(
        "series == 'all' and weeks == 'all'").iloc[0]
    assert pooled.coverage == 0.5 and pooled.coverage_se == pytest.approx(0.5 / 3 ** 0.5)


def _noisy_seasonal(length: int, seed: int) -> np.ndarray:
    time = np.arange(length)
    y = 100 + 0.1 * time + 3 * np.sin(2 * np.pi * time / PERIOD)
    return y * np.exp(np.random.default_rng(seed).normal(scale=0.02, size=length))


def test_conformal_band_uses_the_split_conformal_rank_of_every_backtest_origin():
    y, weeks = _noisy_seasonal(200, 5), 6
    scored = conformal.backtest(y, PERIOD, weeks)
    first = models.minimum_length(PERIOD)
    origins = 200 - weeks - first + 1  # every origin with a fitting window and known weeks
    assert scored.first == first and scored.scores.shape == (origins, weeks)
    expected = np.abs(np.log(y[first:first + weeks] / models.ensemble_forecast(
        y[:first], weeks, PERIOD)))
    np.testing.assert_array_equal(scored.scores[0], expected)

    band = conformal.conformal_bands(y, PERIOD, weeks, (0.9,))[0]
    forecast = models.ensemble_forecast(y, weeks, PERIOD)
    rank = math.ceil((origins + 1) * 0.9)
    half_width = np.sort(scored.scores, axis=0)[rank - 1]
    np.testing.assert_allclose(band.upper, forecast * np.exp(half_width), rtol=1e-12)
    np.testing.assert_allclose(band.lower, forecast * np.exp(-half_width), rtol=1e-12)


def test_a_backtest_of_the_whole_series_cut_at_a_hold_out_sees_only_its_history():
    y, weeks = _noisy_seasonal(200, 7), 6
    scored = conformal.backtest(y, PERIOD, weeks)
    history = y[:150]
    cut = conformal.conformal_bands(history, PERIOD, weeks, (0.95, 0.8), scored)
    fresh = conformal.conformal_bands(history, PERIOD, weeks, (0.95, 0.8))
    for a, b in zip(cut, fresh, strict=True):
        np.testing.assert_array_equal(a.lower, b.lower)
        np.testing.assert_array_equal(a.upper, b.upper)
    with pytest.raises(SeriesTooShort):
        conformal.conformal_bands(y[:models.minimum_length(PERIOD) + weeks - 1], PERIOD, weeks,
                                  (0.95,), scored)


def test_a_backtest_forecast_at_or_below_zero_scores_an_infinite_miss():
    falling = np.concatenate([np.full(60, 100.0), np.linspace(100, 2, 30), np.full(60, 2.0)])
    scored = conformal.backtest(falling, PERIOD, 6)
    forecasts = np.array([models.ensemble_forecast(falling[:origin], 6, PERIOD)
                          for origin in range(scored.first, len(falling) - 6 + 1)])
    assert (forecasts <= 0).any()
    np.testing.assert_array_equal(np.isinf(scored.scores), forecasts <= 0)
    assert not np.isnan(scored.scores).any()


def test_a_band_around_a_forecast_at_or_below_zero_is_refused():
    falling = np.concatenate([np.full(60, 100.0), np.linspace(100, 2, 30)])
    with pytest.raises(NonPositiveForecast, match="for week 2: .* needs a positive forecast"):
        conformal.conformal_bands(falling, PERIOD, 6, (0.95,))


@pytest.mark.usefixtures("cluster")
def test_measure_scores_every_method_at_every_level_and_week():
    time = np.arange(700)
    values = 50 + 0.05 * time + 2 * np.sin(2 * np.pi * time / 52.18)
    values = values * np.exp(np.random.default_rng(6).normal(scale=0.01, size=700))
    series = data.Series("synthetic", "test", "u", pd.DatetimeIndex([]), values, 52.18)
    scores, results = calibration.measure([series], years=2, realizations=6, weeks=4, seed=1,
                                          progress=False)
    assert len(results) == 2 * 2 * 6  # hold-outs × bootstrap methods × realizations
    counts = scores.groupby(["method", "level"]).size()
    assert set(counts.index) == {(m, level) for m in calibration.METHODS
                                 for level in calibration.LEVELS}
    assert (counts == 2 * 4).all()  # hold-outs × weeks
