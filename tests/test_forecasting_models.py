"""The demo's models and their trimmed-mean ensemble, checked against hand computations and the
textbook recursions."""

import numpy as np
import pytest
from scipy import stats

from forecasting_demo import models, smoothing
from forecasting_demo.errors import SeriesTooShort

PERIOD = 12
WEEKLY = 365.25 / 7


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


def test_seasonal_naive_repeats_the_last_season():
    y = np.arange(40.0)
    assert models.seasonal_naive(y, 14, PERIOD).tolist() == [*range(28, 40), 28, 29]


def smoothing_by_recursion(x, alpha, beta, phi, level, trend):
    """Squared one-step errors and the final state: the loop textbooks write."""
    sse = 0.0
    for value in x:
        forecast = level + phi * trend
        error = value - forecast
        level, trend = forecast + alpha * error, phi * trend + beta * error
        sse += error * error
    return sse, level, trend


def best_by_recursion(x, grid):
    """Each setting's best initial state by least squares over recursions from unit starts (the
    errors are linear in it), then the setting with the least error."""
    best = None
    starts = [(1.0, 0.0), (0.0, 1.0)] if grid.trended else [(1.0, 0.0)]
    for alpha, beta, phi in zip(grid.alpha, grid.beta, grid.phi, strict=True):
        def errors(data, start, alpha=alpha, beta=beta, phi=phi):
            level, trend, out = *start, []
            for value in data:
                forecast = level + phi * trend
                out.append(value - forecast)
                level, trend = forecast + alpha * out[-1], phi * trend + beta * out[-1]
            return np.array(out)
        base = errors(x, (0.0, 0.0))
        design = np.column_stack([base - errors(x, start) for start in starts])
        initial = np.linalg.lstsq(design, base, rcond=None)[0]
        start = (initial[0], initial[1] if grid.trended else 0.0)
        sse, level, trend = smoothing_by_recursion(x, alpha, beta, phi, *start)
        if best is None or sse < best[0]:
            best = (sse, level, trend, alpha, beta, phi)
    return best


@pytest.mark.parametrize("grid", [models.FINE_LEVEL, models.COARSE_TREND],
                         ids=["ses", "holt and damped"])
def test_smoothing_fit_equals_the_textbook_recursion_with_its_best_initial_state(grid):
    x = 50 + np.cumsum(np.random.default_rng(2).normal(size=60)) + 0.2 * np.arange(60)
    [fit] = smoothing.fit(x, grid)
    sse, level, trend, alpha, beta, phi = best_by_recursion(x, grid)
    assert (fit.alpha, fit.beta, fit.phi) == (alpha, beta, phi)
    assert fit.sse == pytest.approx(sse, rel=1e-9)
    assert (fit.level, fit.trend) == pytest.approx((level, trend), rel=1e-9, abs=1e-9)


def test_one_pass_over_a_joined_grid_gives_each_kinds_own_best_fit():
    x = 20 + np.cumsum(np.random.default_rng(4).normal(size=80))
    grid = models.FINE_GRID
    ses, holt, damped = smoothing.fit(x, grid, grid.kinds)
    [overall] = smoothing.fit(x, grid)
    assert ses.phi == 0.0 and ses.trend == 0.0 and holt.phi == 1.0 and 0 < damped.phi < 1
    assert overall.sse == min(ses.sse, holt.sse, damped.sse)
    assert ses.sse == pytest.approx(smoothing.fit(x, models.FINE_LEVEL)[0].sse, rel=1e-9)
    [alone] = smoothing.fit(x, models.FINE_TREND, (models.FINE_TREND.kinds[2],))
    assert (damped.alpha, damped.beta, damped.phi) == (alone.alpha, alone.beta, alone.phi)
    # damped trend forecasts level + (phi + ... + phi^h) trend
    steps = np.cumsum(damped.phi ** np.arange(1, 4))
    np.testing.assert_allclose(damped.forecast(3), damped.level + steps * damped.trend)


def test_fft_sizes_have_no_prime_factor_above_five():
    assert smoothing._fft_size(156) == 320 and smoothing._fft_size(8) == 15


def multiplicative_seasonal(n, level=100.0, slope=0.0):
    index = 1 + 0.2 * np.sin(2 * np.pi * np.arange(n) / PERIOD)
    return (level + slope * np.arange(n)) * index


def test_classical_decomposition_restores_an_exact_multiplicative_season():
    y = multiplicative_seasonal(60)
    assert models._is_seasonal(y, PERIOD)
    for model in (models.ses, models.holt, models.damped, models.theta):
        np.testing.assert_allclose(model(y, 18, PERIOD), multiplicative_seasonal(78)[60:],
                                   rtol=1e-6)


def test_a_series_without_a_significant_season_is_not_adjusted():
    noise = 100 + np.random.default_rng(5).normal(size=60)
    assert not models._is_seasonal(noise, PERIOD)
    assert not models._is_seasonal(multiplicative_seasonal(35), PERIOD)  # under three seasons
    [fit] = smoothing.fit(noise, models.FINE_LEVEL)
    np.testing.assert_allclose(models.ses(noise, 5, PERIOD), np.full(5, fit.level))


def test_theta_adds_half_the_slope_to_ses():
    line = 10 + 2.0 * np.arange(48)  # no season; SES follows a line best with alpha = 1
    # alpha = 1: level = last value, drift = slope / 2 * h
    np.testing.assert_allclose(models.theta(line, 3, PERIOD), line[-1] + np.arange(1, 4),
                               rtol=1e-9)


def weekly_line(n, slope=0.01):
    time = np.arange(n)
    return 50 + slope * time + 2 * np.sin(2 * np.pi * time / WEEKLY) + np.cos(
        4 * np.pi * time / WEEKLY)


def test_dhr_extends_an_exact_drift_and_fourier_season():
    y = weekly_line(400)
    np.testing.assert_allclose(models.dhr(y, 52, WEEKLY), weekly_line(452)[400:], atol=1e-8)


def test_weekly_smoothing_members_put_the_fourier_season_back():
    y = weekly_line(400, slope=0.0)  # a level plus a season: every smoothing member is exact
    for model in (models.holt, models.damped, models.theta):
        np.testing.assert_allclose(model(y, 52, WEEKLY), weekly_line(452, slope=0.0)[400:],
                                   atol=1e-6)


def test_yule_walker_solves_the_toeplitz_equations_of_the_autocovariances():
    x = np.random.default_rng(6).normal(size=300)
    for _ in range(2):
        x = x + 0.6 * np.roll(x, 1)
    gamma = np.array([x[lag:] @ x[:300 - lag] / 300 for lag in range(4)])
    toeplitz = gamma[np.abs(np.subtract.outer(np.arange(3), np.arange(3)))]
    np.testing.assert_allclose(models._yule_walker(x, 3), np.linalg.solve(toeplitz, gamma[1:]))
    assert models._yule_walker(np.zeros(50), 3).tolist() == [0.0] * 3


def test_ar_errors_forecast_by_their_coefficients_and_stay_bounded():
    explosive = 1.1 ** np.arange(40)
    forecast = models._ar_forecast(explosive, 3, 200)
    assert np.abs(forecast[-1]) < np.abs(forecast[0])  # Yule-Walker: stationary, decaying
    x = np.random.default_rng(7).normal(size=100)
    a = models._yule_walker(x, 2)
    one, two = models._ar_forecast(x, 2, 2)
    assert one == pytest.approx(a[0] * x[-1] + a[1] * x[-2])
    assert two == pytest.approx(a[0] * one + a[1] * x[-1])


def test_weekly_and_monthly_data_have_their_own_members():
    assert list(models.members(WEEKLY)) == ["seasonal_naive", "dhr", "holt", "damped", "theta"]
    assert list(models.members(PERIOD)) == ["seasonal_naive", "ses", "holt", "damped", "theta"]
    assert models.members(4) is models.members(PERIOD)


def test_ensemble_is_the_trimmed_mean_of_the_members():
    for y, period in ((multiplicative_seasonal(80, slope=0.5), PERIOD),
                      (weekly_line(300) + np.random.default_rng(3).normal(size=300), WEEKLY)):
        members = models.member_forecasts(y, 6, period)
        assert members.shape == (5, 6)
        assert models.ensemble_forecast(y, 6, period).tolist() == models.trimmed_mean(
            members).tolist()


def test_models_refuse_a_series_shorter_than_three_seasons():
    with pytest.raises(SeriesTooShort, match="need 36 observations"):
        models.ensemble_forecast(np.ones(35), 1, PERIOD)
    with pytest.raises(SeriesTooShort, match="need 156 observations"):
        models.dhr(np.ones(155), 1, WEEKLY)
