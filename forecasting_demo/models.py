"""Five fast, standard forecasting models and their ensemble by the 20 %-trimmed mean.

Every model is refitted from scratch at each call (parameters re-estimated, not carried over), on
the last ``window_length(period)`` observations (three seasonal cycles), so a fit costs the same
however long the history grows: the bootstrap refits the ensemble 52 times per realization.

    seasonal_naive   the value one season ago
    drift            the last value plus the average change across the window
    trend_fourier    least squares on a linear trend + Fourier terms of the season
    ses              simple exponential smoothing (alpha by least squares on a grid), seasonally
                     adjusted by the Fourier terms
    theta            the Theta method (SES with half the linear trend's slope, Hyndman & Billah
                     2003), seasonally adjusted the same way

What is fixed by the window length and the period (the regression's pseudo-inverse, the Fourier
transforms of the smoothing kernels of every alpha on the grid) is computed once and cached: a
fit is then a few small matrix products and one FFT, and the whole ensemble costs about 0.3 ms
(bench/bench_demo.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from forecasting_demo.errors import SeriesTooShort

#: Share of members dropped from each end before averaging (paper §5.3: "the top and bottom 20%
#: of individual forecasts are trimmed at each point in time").
TRIM = 0.2
HARMONICS = 3
ALPHAS = np.linspace(0.05, 1.0, 20)

Model = Callable[[np.ndarray, int, float], np.ndarray]


def window_length(period: float) -> int:
    """Observations each model is fitted on: three seasonal cycles."""
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


def drift(y: np.ndarray, horizon: int, period: float) -> np.ndarray:
    recent = _window(y, period)
    slope = (recent[-1] - recent[0]) / (len(recent) - 1)
    return recent[-1] + slope * np.arange(1, horizon + 1)


def trend_fourier(y: np.ndarray, horizon: int, period: float) -> np.ndarray:
    recent = _window(y, period)
    pseudo_inverse, _, future = _regression(len(recent), horizon, period)
    return future @ (pseudo_inverse @ recent)


def ses(y: np.ndarray, horizon: int, period: float) -> np.ndarray:
    fit = _adjusted_smoothing(_window(y, period), horizon, period)
    return fit.level + fit.future_season


def theta(y: np.ndarray, horizon: int, period: float) -> np.ndarray:
    fit = _adjusted_smoothing(_window(y, period), horizon, period)
    n, alpha = len(fit.adjusted), fit.alpha
    centered_time = np.arange(n) - (n - 1) / 2
    slope = centered_time @ fit.adjusted / (centered_time @ centered_time)
    steps = np.arange(1, horizon + 1)
    drift_term = slope / 2 * (steps - 1 + 1 / alpha - (1 - alpha) ** n / alpha)
    return fit.level + drift_term + fit.future_season


MODELS: dict[str, Model] = {
    "seasonal_naive": seasonal_naive,
    "drift": drift,
    "trend_fourier": trend_fourier,
    "ses": ses,
    "theta": theta,
}


def member_forecasts(y: np.ndarray, horizon: int, period: float) -> np.ndarray:
    """Each model's forecast of the next ``horizon`` values: (models, horizon), MODELS order."""
    return np.stack([model(y, horizon, period) for model in MODELS.values()])


def ensemble_forecast(y: np.ndarray, horizon: int, period: float) -> np.ndarray:
    """The ensemble's forecast: the trimmed mean of the members at each horizon."""
    return trimmed_mean(member_forecasts(y, horizon, period))


def _window(y: np.ndarray, period: float) -> np.ndarray:
    needed = window_length(period)
    if len(y) < needed:
        raise SeriesTooShort(
            f"the models need {needed} observations (three seasons of {period:g}), got {len(y)}")
    return np.asarray(y[-needed:], dtype=float)


@functools.lru_cache(maxsize=64)
def _regression(n: int, horizon: int, period: float) -> tuple[np.ndarray, ...]:
    """Pseudo-inverse of the trend + Fourier design on n points, that design, its next rows."""
    fitted = _design(np.arange(n), period)
    future = _design(np.arange(n, n + horizon), period)
    return np.linalg.pinv(fitted), fitted, future


def _design(time: np.ndarray, period: float) -> np.ndarray:
    harmonics = min(HARMONICS, int(period // 2))
    angles = 2 * np.pi * np.outer(time, np.arange(1, harmonics + 1)) / period
    return np.column_stack([np.ones(len(time)), time, np.cos(angles), np.sin(angles)])


@dataclass(frozen=True, eq=False)
class _SmoothingFit:
    adjusted: np.ndarray  # the window without its Fourier season
    future_season: np.ndarray
    level: float
    alpha: float


def _adjusted_smoothing(recent: np.ndarray, horizon: int, period: float) -> _SmoothingFit:
    """SES fitted to the seasonally adjusted window; ses and theta share it (see _fit_smoothing).
    """
    return _fit_smoothing(recent.tobytes(), horizon, period)


@functools.lru_cache(maxsize=2)
def _fit_smoothing(window: bytes, horizon: int, period: float) -> _SmoothingFit:
    """Keyed by the window's bytes: the ensemble calls ses then theta on the same window, and the
    second call costs a lookup instead of a second fit (a third of the ensemble's time)."""
    adjusted, future_season = _seasonally_adjusted(np.frombuffer(window), horizon, period)
    level, alpha = _smoothed_level(adjusted)
    return _SmoothingFit(adjusted, future_season, level, alpha)


def _seasonally_adjusted(recent: np.ndarray, horizon: int, period: float):
    """The window minus its fitted Fourier season, and that season over the next horizons."""
    pseudo_inverse, fitted, future = _regression(len(recent), horizon, period)
    season = pseudo_inverse[2:] @ recent
    return recent - fitted[:, 2:] @ season, future[:, 2:] @ season


def _smoothed_level(x: np.ndarray) -> tuple[float, float]:
    """SES on x: the final level and the alpha of the grid with the least one-step squared error.

    With the level started at x[0], level_t = sum_{j<=t} a (1-a)^(t-j) x_j + (1-a)^(t+1) x_0: a
    convolution, done for every alpha at once by one FFT of x.
    """
    n = len(x)
    kernels, start_weights = _smoothing_kernels(n)
    size = 2 * n
    levels = np.fft.irfft(np.fft.rfft(x, size) * kernels, size)[:, :n] + start_weights * x[0]
    errors = x[1:] - levels[:, :-1]
    best = int(np.argmin((errors * errors).sum(axis=1)))
    return float(levels[best, -1]), float(ALPHAS[best])


@functools.lru_cache(maxsize=8)
def _smoothing_kernels(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per alpha: the FFT of a (1-a)^k (k < n) on 2n points, and (1-a)^(t+1) for t < n."""
    decay = (1 - ALPHAS[:, None]) ** np.arange(n + 1)
    kernels = np.fft.rfft(ALPHAS[:, None] * decay[:, :n], 2 * n)
    return kernels, decay[:, 1:]
