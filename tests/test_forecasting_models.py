"""The demo's models and their trimmed-mean ensemble, checked against hand computations."""

import numpy as np
import pytest
from scipy import stats

from forecasting_demo import models
from forecasting_demo.errors import SeriesTooShort

PERIOD = 12


def test_trimmed_mean_drops_one_member_from_each_end_of_five_at_each_horizon():
    forecasts = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0], [100.0, -50.0]])
    # horizon 1: drop 1 and 100 -> (2+3+4)/3; horizon 2: drop -50 and 40 -> (10+20+30)/3
    assert models.trimmed_mean(forecasts).tolist() == [3.0, 20.0]


def test_trimmed_mean_drops_nothing_from_four_and_two_from_each_end_of_ten():
    four = np.array([[1.0], [2.0], [3.0], [10.0]])
    assert models.trimmed_mean(four).tolist() == [4.0]
    ten = np.arange(10.0).reshape(10, 1) ** 2  # 0 1 4 9 ... 81: keep 4..49
    assert models.trimmed_mean(ten).tolist() == [np.mean([4, 9, 16, 25, 36, 49])]


def test_trimmed_mean_agrees_with_scipy_on_random_members():
    forecasts = np.random.default_rng(1).normal(size=(7, 30))
    np.testing.assert_allclose(models.trimmed_mean(forecasts),
                               stats.trim_mean(forecasts, 0.2, axis=0))


def seasonal_line(n, slope=0.5, level=100.0):
    time = np.arange(n)
    return level + slope * time + 5 * np.sin(2 * np.pi * time / PERIOD)


def test_trend_fourier_extends_an_exact_trend_and_season():
    y = seasonal_line(60)
    np.testing.assert_allclose(models.trend_fourier(y, 18, PERIOD), seasonal_line(78)[60:],
                               atol=1e-9)


def test_seasonal_naive_repeats_the_last_season():
    y = np.arange(40.0)
    assert models.seasonal_naive(y, 14, PERIOD).tolist() == [*range(28, 40), 28, 29]


def test_drift_continues_the_average_change_across_the_window():
    y = np.r_[np.zeros(10), np.arange(36.0) * 2]  # the window is the last 36 values
    assert models.drift(y, 3, PERIOD).tolist() == [72.0, 74.0, 76.0]


def ses_by_recursion(x):
    """The SES level and alpha of least one-step squared error, the loop textbooks write."""
    best = None
    for alpha in models.ALPHAS:
        level, sse = x[0], 0.0
        for value in x[1:]:
            sse += (value - level) ** 2
            level = alpha * value + (1 - alpha) * level
        if best is None or sse < best[0]:
            best = (sse, level, alpha)
    return best[1], best[2]


def test_smoothed_level_equals_the_textbook_recursion():
    x = 50 + np.cumsum(np.random.default_rng(2).normal(size=156))
    level, alpha = models._smoothed_level(x)
    expected_level, expected_alpha = ses_by_recursion(x)
    assert alpha == expected_alpha
    assert level == pytest.approx(expected_level, rel=1e-12)


def test_ses_and_theta_put_the_fitted_season_back_on_a_seasonal_series():
    y = seasonal_line(60, slope=0.0)  # a constant level plus a season: both are exact
    for model in (models.ses, models.theta):
        np.testing.assert_allclose(model(y, 12, PERIOD), seasonal_line(72, slope=0.0)[60:],
                                   atol=1e-6)


def test_ensemble_is_the_trimmed_mean_of_the_members():
    y = seasonal_line(80) + np.random.default_rng(3).normal(size=80)
    members = models.member_forecasts(y, 6, PERIOD)
    assert members.shape == (len(models.MODELS), 6)
    assert models.ensemble_forecast(y, 6, PERIOD).tolist() == models.trimmed_mean(
        members).tolist()


def test_models_refuse_a_series_shorter_than_three_seasons():
    with pytest.raises(SeriesTooShort, match="need 36 observations"):
        models.ensemble_forecast(np.ones(35), 1, PERIOD)
