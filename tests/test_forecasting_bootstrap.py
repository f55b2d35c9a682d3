"""Bootstrap bands: faithful to the method, and bit-for-bit the same however the job runs."""

import numpy as np
import pytest
from faults import attempts_of, faulty

import gpar
from forecasting_demo import bootstrap, models
from forecasting_demo.bootstrap import Draw, Scenario

PERIOD = 12
WEEKS = 8
SEED = 7


def history(n=120):
    time = np.arange(n)
    noise = np.random.default_rng(0).normal(scale=0.5, size=n)
    return 100 + 0.2 * time + 4 * np.sin(2 * np.pi * time / PERIOD) + noise


@pytest.fixture(scope="module")
def scenarios():
    y = history()
    factors = bootstrap.one_step_factors(y, PERIOD, weeks=48)
    return [Scenario(y, factors, PERIOD, method) for method in bootstrap.METHODS]


def test_one_step_factors_are_actual_over_the_ensembles_one_week_forecast():
    y = history()
    factors = bootstrap.one_step_factors(y, PERIOD, weeks=10)
    origin = len(y) - 10 + 3
    assert factors[3] == y[origin] / models.ensemble_forecast(y[:origin], 1, PERIOD)[0]


def test_a_path_appends_each_forecast_times_its_factor_as_an_actual(scenarios):
    scenario = scenarios[0]
    path = bootstrap.simulate_path(scenario, WEEKS, np.random.default_rng(3))
    factors = bootstrap.draw_factors(scenario, WEEKS, np.random.default_rng(3))
    extended = scenario.history
    for week in range(WEEKS):
        expected = models.ensemble_forecast(extended, 1, PERIOD)[0] * factors[week]
        assert path[week] == expected
        extended = np.r_[extended, path[week]]


def test_paper_draws_factors_independently_and_block_draws_consecutive_runs(scenarios):
    paper, block = scenarios
    drawn = bootstrap.draw_factors(block, 60, np.random.default_rng(4))
    positions = [int(np.flatnonzero(block.factors == value)[0]) for value in drawn]
    runs = np.diff(positions)[: bootstrap.BLOCK_WEEKS - 1]
    assert (runs == 1).all()  # the first block is consecutive backtest weeks
    independent = bootstrap.draw_factors(paper, 60, np.random.default_rng(4))
    steps = np.diff([int(np.flatnonzero(paper.factors == v)[0]) for v in independent])
    assert (steps != 1).sum() > 40


def test_each_realization_has_its_own_stream(scenarios):
    first = bootstrap.simulate(Draw(0, 0), scenarios, WEEKS, SEED)
    assert not np.array_equal(first, bootstrap.simulate(Draw(0, 1), scenarios, WEEKS, SEED))
    streams = [np.random.default_rng(bootstrap.realization_seed(SEED, draw)).random(4)
               for draw in (Draw(0, 0), Draw(0, 1), Draw(1, 0))]
    assert len({tuple(stream) for stream in streams}) == 3


def flaky_simulate(draw, table, marker_dir, scenarios, weeks, seed):
    """bootstrap.simulate after what ``table`` says for this attempt of the draw (faults.py)."""
    faulty(draw.scenario * 1000 + draw.realization, table, marker_dir)
    return bootstrap.simulate(draw, scenarios, weeks, seed)


@pytest.mark.usefixtures("cluster")
def test_band_is_bit_for_bit_the_same_whatever_workers_batching_retries_or_backups(
        scenarios, tmp_path):
    realizations = 30
    reference, _ = bootstrap.run_realizations(scenarios, realizations, WEEKS, SEED,
                                              max_workers=2, progress=False)
    one_worker, _ = bootstrap.run_realizations(scenarios, realizations, WEEKS, SEED,
                                               max_workers=1, progress=False)
    # another split into tasks: the draws in reverse order, in batches of their own
    draws = bootstrap.draws(len(scenarios), realizations)[::-1]
    reversed_paths = gpar.apply(draws, bootstrap.simulate, scenarios, WEEKS, SEED,
                                progress=False)[::-1]
    # a worker dies on the first attempt of draws 3 and 47 (scenario 1, realization 17): they
    # are retried; draw 20 straggles on its first attempt: it is run again (preempted while
    # work waits, or backed up at the tail)
    table = {(3, 0): "exit", (1017, 0): "exit", (20, 0): ("sleep", 5)}
    retried = gpar.apply(bootstrap.draws(len(scenarios), realizations), flaky_simulate, table,
                         str(tmp_path), scenarios, WEEKS, SEED, progress=False)
    # each crashed draw ran again (on a loaded machine its slow retry may also get a backup)
    assert attempts_of(tmp_path, 3) >= 2 and attempts_of(tmp_path, 1017) >= 2
    assert attempts_of(tmp_path, 20) >= 2
    assert retried.report.backups + retried.report.preemptions >= 1
    for paths in (one_worker, np.stack(reversed_paths), np.stack(retried)):
        assert np.array_equal(paths.reshape(reference.shape), reference)
    band = bootstrap.quantile_band(reference[0], 0.95)
    retried_band = bootstrap.quantile_band(np.stack(retried)[:realizations], 0.95)
    assert np.array_equal(band.lower, retried_band.lower)
    assert np.array_equal(band.upper, retried_band.upper)


def test_quantile_band_takes_pointwise_quantiles():
    paths = np.arange(1.0, 101.0)[:, None] * np.array([1.0, 2.0])
    band = bootstrap.quantile_band(paths, 0.9)
    np.testing.assert_allclose(band.lower, np.quantile(paths, 0.05, axis=0))
    np.testing.assert_allclose(band.upper, np.quantile(paths, 0.95, axis=0))
    assert band.level == 0.9
