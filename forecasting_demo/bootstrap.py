"""Simulation bands by iterative bootstrap (paper §5.4, Figure 5), fanned out with gpar.apply.

    rolling backtest ──▶ one-week-out adjusting factors (actual / forecast)
                                     │ drawn
    realization r: for each week w:  ▼
        forecast week w one week ahead with the ensemble × a drawn factor ──▶ appended as actual
    band: pointwise alpha/2 and 1 - alpha/2 quantiles over the realizations

Two ways to draw the factors:

    paper   each week's factor independently (the paper's method); real one-week errors persist
            from week to week, so these bands are too narrow (see the report's calibration)
    block   consecutive runs of BLOCK_WEEKS factors from the backtest (a moving-block bootstrap),
            which keeps that persistence

Realization r of scenario s draws from its own stream, SeedSequence(seed, spawn_key=(s, r)), and
nothing else is random: the band is bit-for-bit the same however the realizations are batched,
retried or backed up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from forecasting_demo.errors import SeriesTooShort
from forecasting_demo.models import ensemble_forecast, minimum_length

METHODS = ("paper", "block")
#: Length of the blocks of consecutive one-week factors: half a year. Of 13, 26 and 52 weeks,
#: tried on the report's five most recent hold-outs, 26 and 52 covered about equally and 13
#: clearly less.
BLOCK_WEEKS = 26
#: Origins of the rolling backtest that yields the factors: the last five years of weeks.
BACKTEST_WEEKS = 260


@dataclass(frozen=True, eq=False)
class Scenario:
    """What realizations extend: a history, its backtest factors, how factors are drawn."""

    history: np.ndarray
    factors: np.ndarray
    period: float
    method: str


@dataclass(frozen=True)
class Draw:
    """One realization: which scenario it extends and its number there (which fixes its seed)."""

    scenario: int
    realization: int


@dataclass(frozen=True, eq=False)
class Band:
    """Pointwise bounds holding ``level`` of the realizations at each week ahead."""

    level: float
    lower: np.ndarray
    upper: np.ndarray


def one_step_factors(history: np.ndarray, period: float,
                     weeks: int = BACKTEST_WEEKS) -> np.ndarray:
    """actual / one-week-ahead ensemble forecast, for each of the last ``weeks`` of history."""
    first = len(history) - weeks
    if first < minimum_length(period):
        raise SeriesTooShort(
            f"a {weeks}-week backtest needs {weeks + minimum_length(period)} observations, "
            f"got {len(history)}")
    forecasts = np.array([ensemble_forecast(history[:t], 1, period)[0]
                          for t in range(first, len(history))])
    return history[first:] / forecasts


def scenario(history: np.ndarray, period: float, method: str) -> Scenario:
    """A scenario extending ``history``, its factors from a rolling backtest on that history."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return Scenario(history, one_step_factors(history, period), period, method)


def draw_factors(scenario: Scenario, weeks: int, rng: np.random.Generator) -> np.ndarray:
    factors = scenario.factors
    if scenario.method == "paper":
        return rng.choice(factors, size=weeks)
    starts = rng.integers(0, len(factors) - BLOCK_WEEKS + 1, size=math.ceil(weeks / BLOCK_WEEKS))
    return np.concatenate([factors[start:start + BLOCK_WEEKS] for start in starts])[:weeks]


def simulate_path(scenario: Scenario, weeks: int, rng: np.random.Generator) -> np.ndarray:
    """One realization: ``weeks`` values, each the ensemble's one-week forecast × a factor."""
    factors = draw_factors(scenario, weeks, rng)
    extended = np.concatenate([scenario.history, np.empty(weeks)])
    start = len(scenario.history)
    for week in range(weeks):
        forecast = ensemble_forecast(extended[:start + week], 1, scenario.period)[0]
        extended[start + week] = forecast * factors[week]
    return extended[start:]


def realization_seed(seed: int, draw: Draw) -> np.random.SeedSequence:
    return np.random.SeedSequence(seed, spawn_key=(draw.scenario, draw.realization))


def simulate(draw: Draw, scenarios: list[Scenario], weeks: int, seed: int) -> np.ndarray:
    """The mapper: realization ``draw`` of its scenario, from its own random stream."""
    rng = np.random.default_rng(realization_seed(seed, draw))
    return simulate_path(scenarios[draw.scenario], weeks, rng)


def draws(scenarios: int, realizations: int) -> list[Draw]:
    return [Draw(s, r) for s in range(scenarios) for r in range(realizations)]


def run_realizations(scenarios: list[Scenario], realizations: int, weeks: int, seed: int,
                     **apply_options):
    """Every realization of every scenario on the cluster: (paths (scenarios, realizations,
    weeks), the gpar Results whose report times the job)."""
    import gpar

    results = gpar.apply(draws(len(scenarios), realizations), simulate, scenarios, weeks, seed,
                         errors="raise", **apply_options)
    paths = np.stack(results).reshape(len(scenarios), realizations, weeks)
    return paths, results


def quantile_band(paths: np.ndarray, level: float) -> Band:
    """The band holding ``level`` of the realizations (rows of ``paths``) at each week."""
    alpha = 1 - level
    lower, upper = np.quantile(paths, [alpha / 2, 1 - alpha / 2], axis=0)
    return Band(level, lower, upper)
