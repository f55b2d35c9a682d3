"""Five fast, standard forecasting models per kind of data, combined by the 20 %-trimmed mean.

Every model is refitted from scratch at each call (parameters re-estimated, not carried over).
The smoothing models (SES, Holt, damped trend, Theta) forecast the seasonally adjusted series and
put the season back; what differs by kind of data is the adjustment, the fitting span and one
member:

    monthly, quarterly   the whole series, adjusted by classical multiplicative decomposition
    (period <= 24)       when its autocorrelation at one season is significant (the M3 Theta
                         method's recipe, as R's thetaf applies it)
                         members: seasonal_naive, ses, holt, damped, theta (SES, Holt and damped
                         trend are the M3 competition's "Comb S-H-D" benchmark)
    weekly               the last three years, adjusted by a regression on a linear trend and
    (period > 24)        WEEKLY_HARMONICS Fourier terms of the year (a 52.18-week season fits no
                         classical decomposition)
                         members: seasonal_naive, dhr, holt, damped, theta (a dynamic harmonic
                         regression in place of SES: level and season move slowly, trend matters)

    seasonal_naive   the value one season ago
    ses              simple exponential smoothing
    holt             Holt's linear trend
    damped           damped trend
    theta            SES with half the linear trend's slope (Hyndman & Billah 2003)
    dhr              the weekly changes regressed on a drift and the changes of Fourier terms,
                     with AR(DHR_AR_ORDER) errors (R's auto.arima with Fourier terms, d = 1),
                     fitted on the last DHR_YEARS years

The member sets and spans were chosen on the weekly hold-outs and M3 monthly only
(bench/bench_models.py); M3 quarterly, which no choice saw, checks them. Fits are grid searches
done as filters (forecasting_demo.smoothing): what depends only on the length is cached.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from forecasting_demo import smoothing
from forecasting_demo.errors import SeriesTooShort

#: Share of members dropped from each end before averaging (paper §5.3: "the top and bottom 20%
#: of individual forecasts are trimmed at each point in time").
TRIM = 0.2
#: Seasons longer than this are weekly data's year: adjusted by Fourier terms over a window.
LONGEST_CLASSICAL_SEASON = 24
#: Weekly data: years of history the smoothing models fit, and the Fourier terms of the year.
WEEKLY_YEARS = 3
WEEKLY_HARMONICS = 6
#: The dynamic harmonic regression: years of weekly changes it fits and its AR order. 5 years and
#: AR(3) beat 3 and 8 years, AR(1) (bench/bench_models.py's weekly hold-outs).
DHR_YEARS = 5
DHR_AR_ORDER = 3
#: Critical value of the seasonality test at one season (90 %, two-sided, as R's thetaf).
SEASONALITY_Z = 1.645

#: Grids searched by the smoothing models. Monthly and quarterly fits are few (one per series and
#: training end) and whole series are short: fine grids. A weekly fit runs at every step of every
#: bootstrap realization: coarser grids, a tenth of the cost, the same hold-out scores
#: (bench/bench_models.py).
FINE_LEVEL = smoothing.level_grid([0.001, 0.005, 0.01, *np.linspace(0.02, 1.0, 50)])
FINE_TREND = smoothing.trend_grid(np.linspace(0.05, 1.0, 12), (0.001, 0.01, 0.05, 0.1, 0.3),
                                  (0.8, 0.85, 0.9, 0.95, 0.98, smoothing.HOLT_PHI))
COARSE_LEVEL = smoothing.level_grid(np.linspace(0.05, 1.0, 20))
COARSE_TREND = smoothing.trend_grid((0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0), (0.01, 0.1),
                                    (0.9, 0.98, smoothing.HOLT_PHI))
FINE_GRID = smoothing.joined(FINE_LEVEL, FINE_TREND)
COARSE_GRID = smoothing.joined(COARSE_LEVEL, COARSE_TREND)

Model = Callable[[np.ndarray, int, float], np.ndarray]


def is_weekly(period: float) -> bool:
    return period > LONGEST_CLASSICAL_SEASON


def minimum_length(period: float) -> int:
    """Observations the models need: three seasonal cycles."""
    return 3 * round(period)


def trimmed_mean(forecasts: np.ndarray, trim: float = TRIM) -> np.ndarray:
    """Mean over axis 0 after dropping floor(trim * n) values from each end, as R and SciPy do.

    ``forecasts`` is (members, horizons); with fewer than 5 members a 20 % trim drops nothing.
    """
    members = forecasts.shape[0]
    cut = int(np.floor(trim * members))
    ordered = np.sort(forecasts, axis=0)
    return ordered[cut:members - cut].mean(axis=0)


def seasonal_naive(y: np.ndarray, horizon: int, period: float) -> np.ndarray:
    lag = round(period)
    return y[len(y) - lag + np.arange(horizon) % lag]


def ses(y: np.ndarray, horizon: int, period: float) -> np.ndarray:
    adjusted = _adjusted(_fitted_span(y, period), horizon, period)
    return adjusted.restore(_level_fit(adjusted).forecast(horizon))


def holt(y: np.ndarray, horizon: int, period: float) -> np.ndarray:
    adjusted = _adjusted(_fitted_span(y, period), horizon, period)
    return adjusted.restore(_trend_fits(adjusted)[0].forecast(horizon))


def damped(y: np.ndarray, horizon: int, period: float) -> np.ndarray:
    adjusted = _adjusted(_fitted_span(y, period), horizon, period)
    return adjusted.restore(_trend_fits(adjusted)[1].forecast(horizon))


def theta(y: np.ndarray, horizon: int, period: float) -> np.ndarray:
    """SES of the adjusted series plus half its least-squares slope, with the drift term of
    Hyndman & Billah (2003) that R's thetaf uses."""
    adjusted = _adjusted(_fitted_span(y, period), horizon, period)
    fit, x = _level_fit(adjusted), adjusted.values
    n, alpha = len(x), fit.alpha
    centered_time = np.arange(n) - (n - 1) / 2
    slope = centered_time @ x / (centered_time @ centered_time)
    steps = np.arange(1, horizon + 1)
    drift_term = slope / 2 * (steps - 1 + 1 / alpha - (1 - alpha) ** n / alpha)
    return adjusted.restore(fit.level + drift_term)


def dhr(y: np.ndarray, horizon: int, period: float) -> np.ndarray:
    """The last value plus the forecast changes: drift + Fourier changes + AR errors."""
    _fitted_span(y, period)  # refuses a series too short
    n = min(round(DHR_YEARS * period), len(y) - 1)  # changes fitted
    changes = np.diff(np.asarray(y[-n - 1:], dtype=float))
    pseudo_inverse, fitted, future = _change_regression(n, horizon, period)
    coefficients = pseudo_inverse @ changes
    errors = changes - fitted @ coefficients
    future_changes = future @ coefficients + _ar_forecast(errors, DHR_AR_ORDER, horizon)
    return y[-1] + np.cumsum(future_changes)


SEASONAL_MEMBERS: dict[str, Model] = {
    "seasonal_naive": seasonal_naive, "ses": ses, "holt": holt, "damped": damped, "theta": theta,
}
WEEKLY_MEMBERS: dict[str, Model] = {
    "seasonal_naive": seasonal_naive, "dhr": dhr, "holt": holt, "damped": damped, "theta": theta,
}


def members(period: float) -> dict[str, Model]:
    """The ensemble's members for data with this seasonal period."""
    return WEEKLY_MEMBERS if is_weekly(period) else SEASONAL_MEMBERS


def member_forecasts(y: np.ndarray, horizon: int, period: float) -> np.ndarray:
    """Each member's forecast of the next ``horizon`` values: (members, horizon), in the order
    of ``members(period)``."""
    return np.stack([model(y, horizon, period) for model in members(period).values()])


def ensemble_forecast(y: np.ndarray, horizon: int, period: float) -> np.ndarray:
    """The ensemble's forecast: the trimmed mean of the members at each horizon."""
    return trimmed_mean(member_forecasts(y, horizon, period))


def _fitted_span(y: np.ndarray, period: float) -> np.ndarray:
    """The observations the smoothing models fit: the last years of weekly data, else all."""
    needed = minimum_length(period)
    if len(y) < needed:
        raise SeriesTooShort(
            f"the models need {needed} observations (three seasons of {period:g}), got {len(y)}")
    span = round(WEEKLY_YEARS * period) if is_weekly(period) else len(y)
    return np.asarray(y[-span:], dtype=float)


@dataclass(frozen=True, eq=False)
class _Adjusted:
    """A span without its season, that season over the horizons, and how they combine."""

    values: np.ndarray
    future_season: np.ndarray
    multiplicative: bool
    weekly: bool  # which grids the fits search
    key: bytes  # the adjusted values' bytes: what the fits below are cached by

    def restore(self, forecast: np.ndarray) -> np.ndarray:
        if self.multiplicative:
            return forecast * self.future_season
        return forecast + self.future_season


def _adjusted(span: np.ndarray, horizon: int, period: float) -> _Adjusted:
    return _adjusted_cached(span.tobytes(), horizon, period)


@functools.lru_cache(maxsize=4)
def _adjusted_cached(span: bytes, horizon: int, period: float) -> _Adjusted:
    """Keyed by the span's bytes: the members of one ensemble call share one adjustment."""
    x = np.frombuffer(span)
    if is_weekly(period):
        values, future = _fourier_adjusted(x, horizon, period)
        return _Adjusted(values, future, False, True, values.tobytes())
    if not _is_seasonal(x, round(period)):
        return _Adjusted(x, np.ones(horizon), True, False, span)
    index = _seasonal_index(x, round(period))
    position = np.arange(len(x) + horizon) % round(period)
    values = x / index[position[:len(x)]]
    return _Adjusted(values, index[position[len(x):]], True, False, values.tobytes())


@functools.lru_cache(maxsize=4)
def _smoothing_fits(key: bytes, weekly: bool) -> tuple[smoothing.Fit, ...]:
    """SES's, Holt's and the damped trend's fits to the adjusted values, from one pass over one
    grid; keyed by their bytes, so the members of one ensemble call share it."""
    grid = COARSE_GRID if weekly else FINE_GRID
    return tuple(smoothing.fit(np.frombuffer(key), grid, grid.kinds))


def _level_fit(adjusted: _Adjusted) -> smoothing.Fit:
    return _smoothing_fits(adjusted.key, adjusted.weekly)[0]


def _trend_fits(adjusted: _Adjusted) -> tuple[smoothing.Fit, smoothing.Fit]:
    """Holt's fit, the damped trend's."""
    _, holt_fit, damped_fit = _smoothing_fits(adjusted.key, adjusted.weekly)
    return holt_fit, damped_fit


def _is_seasonal(x: np.ndarray, lag: int) -> bool:
    """Is the autocorrelation at one season significant (90 %, Bartlett's standard error)?
    Series shorter than three seasons are taken as not seasonal, as R's thetaf does below two."""
    n = len(x)
    if lag < 2 or n < 3 * lag:
        return False
    centered = x - x.mean()
    variance = centered @ centered
    if variance == 0:  # a constant series has no season
        return False
    acf = np.array([centered[k:] @ centered[:-k] for k in range(1, lag + 1)]) / variance
    standard_error = np.sqrt((1 + 2 * np.sum(acf[:-1] ** 2)) / n)
    return bool(abs(acf[-1]) > SEASONALITY_Z * standard_error)


def _seasonal_index(x: np.ndarray, lag: int) -> np.ndarray:
    """Classical multiplicative decomposition: the mean ratio of each position in the season
    (position 0 = the first observation) to the centred moving average, scaled to mean 1."""
    weights = np.r_[0.5, np.ones(lag - 1), 0.5] / lag if lag % 2 == 0 else np.ones(lag) / lag
    trend = np.convolve(x, weights, mode="valid")
    offset = len(weights) // 2
    ratios = x[offset:offset + len(trend)] / trend
    position = (np.arange(len(trend)) + offset) % lag
    index = np.bincount(position, ratios, lag) / np.bincount(position, minlength=lag)
    return index / index.mean()


def _fourier_adjusted(x: np.ndarray, horizon: int, period: float):
    """The span minus its season fitted with a linear trend, and that season ahead."""
    pseudo_inverse, fitted, future = _trend_season_regression(len(x), horizon, period)
    season = pseudo_inverse[2:] @ x
    return x - fitted[:, 2:] @ season, future[:, 2:] @ season


@functools.lru_cache(maxsize=64)
def _trend_season_regression(n: int, horizon: int, period: float) -> tuple[np.ndarray, ...]:
    """Pseudo-inverse of the [1, t, Fourier terms] design on n points, that design, its next
    rows."""
    time = np.arange(n + horizon)
    design = np.column_stack([np.ones(n + horizon), time, _fourier(time, period)])
    return np.linalg.pinv(design[:n]), design[:n], design[n:]


@functools.lru_cache(maxsize=64)
def _change_regression(n: int, horizon: int, period: float) -> tuple[np.ndarray, ...]:
    """The same for changes: [1 (the drift), changes of the Fourier terms] on n changes."""
    terms = np.diff(_fourier(np.arange(n + horizon + 1), period), axis=0)
    design = np.column_stack([np.ones(n + horizon), terms])
    return np.linalg.pinv(design[:n]), design[:n], design[n:]


def _fourier(time: np.ndarray, period: float) -> np.ndarray:
    harmonics = min(WEEKLY_HARMONICS, int(period // 2))
    angles = 2 * np.pi * np.outer(time, np.arange(1, harmonics + 1)) / period
    return np.column_stack([np.cos(angles), np.sin(angles)])


def _ar_forecast(errors: np.ndarray, order: int, horizon: int) -> np.ndarray:
    """The next ``horizon`` values of an AR(order) fitted to ``errors`` by Yule-Walker.

    Yule-Walker (the Durbin-Levinson recursion on the sample autocovariances) always gives a
    stationary AR, so its forecasts decay to 0 instead of growing without bound, and costs a few
    scalar steps at every bootstrap step where a least-squares fit costs a solve."""
    coefficients = _yule_walker(errors, order)
    recent = list(errors[::-1][:order])
    forecast = []
    for _ in range(horizon):
        forecast.append(float(np.dot(coefficients, recent)))
        recent = [forecast[-1], *recent[:-1]]
    return np.array(forecast)


def _yule_walker(x: np.ndarray, order: int) -> np.ndarray:
    """AR coefficients a_1..a_order of x_t = sum a_k x_{t-k} + e_t, by Durbin-Levinson on the
    (biased) sample autocovariances of x around 0; zeros if x is all 0."""
    n = len(x)
    autocovariance = [float(x[lag:] @ x[:n - lag]) / n for lag in range(order + 1)]
    if autocovariance[0] == 0:
        return np.zeros(order)
    coefficients: list[float] = []
    variance = autocovariance[0]
    for k in range(1, order + 1):
        partial = (autocovariance[k] - sum(a * autocovariance[k - 1 - j]
                                           for j, a in enumerate(coefficients))) / variance
        coefficients = [a - partial * coefficients[k - 2 - j]
                        for j, a in enumerate(coefficients)] + [partial]
        variance *= 1 - partial * partial
    return np.array(coefficients)
