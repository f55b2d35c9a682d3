"""Exponential smoothing fitted over a grid of parameters at once, as linear filters.

For fixed parameters, simple (SES), linear-trend (Holt) and damped-trend smoothing are linear in
the data and the initial state: the one-step forecasts are

    forecast_t = sum_{j<t} impulse_{t-j} y_j + start_t · initial_state

with ``impulse`` and ``start`` depending only on the parameters and the length n. Everything that
does not depend on the data is computed once per (grid, n) and cached. A fit is then one batched
FFT convolution of the series with every setting's impulse response, the initial state that
minimises each setting's squared one-step errors in closed form (a k × k solve; R's ``ets``
estimates the initial state too), and the setting with the least error.

States are (level,) for SES and (level, trend) for Holt and damped trend:

    forecast_t = level_{t-1} + phi trend_{t-1}             error_t = y_t - forecast_t
    level_t = forecast_t + alpha error_t                   trend_t = phi trend_{t-1} + beta error_t
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

#: Holt's linear trend is the damped trend with phi = 1.
HOLT_PHI = 1.0


@dataclass(frozen=True, eq=False)  # hashed by identity: a cache key looked up at every fit
class Grid:
    """Settings searched together: alpha, beta, phi per setting. SES settings have beta = phi = 0
    (their trend stays 0), Holt's phi = 1, the damped trend's 0 < phi < 1."""

    alpha: tuple[float, ...]
    beta: tuple[float, ...]
    phi: tuple[float, ...]

    @property
    def trended(self) -> bool:
        return any(self.phi)

    @functools.cached_property
    def kinds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks of the SES, Holt and damped-trend settings."""
        phi = np.array(self.phi)
        return phi == 0, phi == HOLT_PHI, (0 < phi) & (phi < HOLT_PHI)


def level_grid(alphas) -> Grid:
    alphas = tuple(float(a) for a in alphas)
    zeros = (0.0,) * len(alphas)
    return Grid(alphas, zeros, zeros)


def trend_grid(alphas, beta_shares, phis) -> Grid:
    """Every alpha × beta (a share of alpha, so beta < alpha as ``ets`` requires) × phi."""
    settings = [(a, a * share, phi) for a in alphas for share in beta_shares for phi in phis]
    alpha, beta, phi = (tuple(float(v) for v in column) for column in zip(*settings, strict=True))
    return Grid(alpha, beta, phi)


def joined(*grids: Grid) -> Grid:
    """One grid of all their settings: SES, Holt and damped trend fitted in one convolution."""
    return Grid(*(sum((getattr(grid, name) for grid in grids), ()) for name in
                  ("alpha", "beta", "phi")))


@dataclass(frozen=True, eq=False)
class Fit:
    """The chosen setting and the state after the last observation."""

    level: float
    trend: float
    alpha: float
    beta: float
    phi: float
    sse: float

    def forecast(self, horizon: int) -> np.ndarray:
        """level + (phi + phi^2 + ... + phi^h) trend at each horizon h."""
        return self.level + np.cumsum(self.phi ** np.arange(1, horizon + 1)) * self.trend


@dataclass(frozen=True, eq=False)
class _Filters:
    """What each setting of a grid does to any series of n values."""

    transfer: np.ndarray  # (G, _): rfft (_fft_size(n)) of the impulse response data -> forecast
    start_by_state: np.ndarray  # (G, k, n): one-step forecasts from each unit initial state
    gram_inverse: np.ndarray  # (G, k, k): inverse of start' start
    from_data: np.ndarray  # (G, k, n): the final state's weights on the data
    from_start: np.ndarray  # (G, k, k): the final state's weights on the initial state


def fit(x: np.ndarray, grid: Grid, groups: tuple[np.ndarray, ...] | None = None) -> list[Fit]:
    """For each group of settings (boolean masks over ``grid``; one group of all settings by
    default), the setting with the least squared one-step error on ``x`` and its best initial
    state. Groups share the one convolution (Grid.kinds: SES, Holt and damped trend)."""
    n = len(x)
    filters = _filters(grid, n)
    size = _fft_size(n)
    from_data = np.fft.irfft(np.fft.rfft(x, size) * filters.transfer, size)[:, :n]
    residual = x - from_data
    moments = np.matmul(filters.start_by_state, residual[:, :, None])[:, :, 0]
    initial = np.matmul(filters.gram_inverse, moments[:, :, None])[:, :, 0]
    sse = np.einsum("gt,gt->g", residual, residual) - np.einsum("gk,gk->g", moments, initial)
    fits = []
    for group in groups if groups is not None else (np.ones(len(sse), dtype=bool),):
        best = int(np.argmin(np.where(group, sse, np.inf)))
        state = filters.from_data[best] @ x + filters.from_start[best] @ initial[best]
        fits.append(Fit(level=float(state[0]), trend=float(state[1]) if grid.trended else 0.0,
                        alpha=grid.alpha[best], beta=grid.beta[best], phi=grid.phi[best],
                        sse=float(sse[best])))
    return fits


@functools.lru_cache(maxsize=512)
def _filters(grid: Grid, n: int) -> _Filters:
    alpha, beta, phi = (np.array(values) for values in (grid.alpha, grid.beta, grid.phi))
    settings = len(alpha)
    if grid.trended:
        observe = np.stack([np.ones(settings), phi], axis=1)  # forecast = w · state
        gain = np.stack([alpha, beta], axis=1)
        transition = np.zeros((settings, 2, 2))
        transition[:, 0, 0], transition[:, 0, 1], transition[:, 1, 1] = 1.0, phi, phi
    else:
        observe, gain = np.ones((settings, 1)), alpha[:, None]
        transition = np.ones((settings, 1, 1))
    # state_t = A state_{t-1} + g y_t, with A = F - g w' (the error feeds back)
    closed = transition - gain[:, :, None] * observe[:, None, :]
    powers = [np.broadcast_to(np.eye(closed.shape[1]), closed.shape)]
    for _ in range(n):
        powers.append(closed @ powers[-1])
    powers = np.stack(powers, axis=1)  # (G, n + 1, k, k): A^0 .. A^n
    start = np.einsum("gk,gtkj->gtj", observe, powers[:, :n])  # w' A^t
    state_impulse = np.einsum("gtkj,gj->gtk", powers[:, :n], gain)  # A^t g
    impulse = np.zeros((settings, n))
    impulse[:, 1:] = np.einsum("gk,gtk->gt", observe, state_impulse[:, :n - 1])
    gram = np.einsum("gtj,gtk->gjk", start, start)
    return _Filters(
        transfer=np.fft.rfft(impulse, _fft_size(n)),
        start_by_state=np.ascontiguousarray(start.transpose(0, 2, 1)),
        gram_inverse=np.linalg.pinv(gram),
        from_data=state_impulse[:, ::-1].transpose(0, 2, 1),
        from_start=powers[:, n],
    )


@functools.lru_cache(maxsize=512)
def _fft_size(n: int) -> int:
    """The least size >= 2n - 1 (a linear, not circular, convolution of n values) with no prime
    factor above 5: pocketfft is several times faster there (n = 156: 320, not 312 = 24 × 13)."""
    size = 2 * n - 1
    while True:
        rest = size
        for prime in (2, 3, 5):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return size
        size += 1
