"""The demo from data to numbers: three gpar jobs and what the report shows of them.

    forecast evaluation   M3 series × training ends ──gpar.apply(output=)──▶ rows ──SQL──▶ MAPE,
                          and sMAPE at M3's official split (monthly; quarterly out of sample)
    calibration           demo series × yearly hold-outs × methods ──gpar.apply──▶ coverage
    bootstrap bands       realizations of the chosen series ──gpar.apply──▶ band, Table 1, CDF
                          + the same realizations' first few run serially here: the speedup

The evaluation runs first, so its job pays the cluster's cold start and the bootstrap job, which
the speedup is measured on, runs on warm workers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forecasting_demo import bootstrap, calibration, data, evaluation
from forecasting_demo.bootstrap import Band, Draw, Scenario
from forecasting_demo.conformal import conformal_bands
from forecasting_demo.models import member_forecasts, members, trimmed_mean


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the three jobs. The defaults take about two minutes on two cores."""

    out: Path
    series: str = "gasoline"
    realizations: int = 500
    weeks: int = 52
    holdout_years: int = 10
    #: 100, not 200: the stronger ensemble costs about twice as much per forecast
    #: (bench/bench_models.py), and this job refits it at every step of 20 hold-outs × 2 methods
    #: × these realizations × 52 weeks.
    calibration_realizations: int = 100
    m3_series: int | None = None  # None: all 1,428
    training_ends: int = 3
    serial_realizations: int = 30
    seed: int = 2026
    address: str | None = None
    progress: bool | None = None


PAPER_SCALE = {"realizations": 1000, "weeks": 52, "training_ends": 6}


@dataclass(frozen=True, eq=False)
class BootstrapJob:
    """The bootstrap of the chosen series and what it cost, parallel and serial."""

    paths: np.ndarray  # (realizations, weeks)
    bands: list[Band]  # the paper's method at calibration.LEVELS
    conformal: list[Band]  # the calibrated bands from the same history
    report: Any  # the job's gpar JobReport
    wall_s: float
    workers: int
    serial_realizations: int
    serial_s: float
    serial_matches: bool  # the serial realizations equal the job's, bit for bit

    @property
    def speedup(self) -> float:
        """Serial seconds per realization over the job's wall seconds per realization."""
        per_realization_parallel = self.wall_s / len(self.paths)
        return self.serial_s / self.serial_realizations / per_realization_parallel

    @property
    def efficiency(self) -> float:
        return self.speedup / self.workers


@dataclass(frozen=True, eq=False)
class EvaluationJob:
    mape: pd.DataFrame
    official: pd.DataFrame  # sMAPE and MAPE by model at M3's official split (OFFICIAL_SPLIT_SQL)
    quarterly: pd.DataFrame  # the same on the M3 quarterly series
    quarterly_series: int
    tasks: int  # one per series
    origins: int  # (series, training end) pairs
    rows: int
    output: str
    wall_s: float


@dataclass(frozen=True, eq=False)
class DemoRun:
    """Everything the report shows, as computed in one run."""

    config: DemoConfig
    series: data.Series
    sources: list[tuple[str, str]]  # (data set, where it comes from)
    member_names: list[str]
    members: np.ndarray  # each member's forecast of the weeks ahead, member_names order
    ensemble: np.ndarray
    bootstrap: BootstrapJob
    calibration: pd.DataFrame  # calibration.summary
    calibration_wall_s: float
    evaluation: EvaluationJob
    total_s: float


def run(config: DemoConfig, say=print) -> DemoRun:
    """Run the three jobs; ``say`` gets one line as each stage starts."""
    started = time.perf_counter()
    series = data.demo_series(config.series)
    weekly = [data.demo_series(name) for name in data.DEMO_SERIES]
    apply_options = {"address": config.address, "progress": config.progress}

    say(f"evaluation: M3 monthly series x {config.training_ends} training ends, M3 quarterly "
        "series at the official split")
    evaluation_job = _evaluate(config, apply_options)
    say(f"calibration: {config.holdout_years} yearly hold-outs of "
        f"{', '.join(s.name for s in weekly)}")
    calibration_started = time.perf_counter()
    scores, _ = calibration.measure(weekly, config.holdout_years,
                                    config.calibration_realizations, config.weeks,
                                    config.seed, **apply_options)
    calibration_wall_s = time.perf_counter() - calibration_started
    say(f"bootstrap: {config.realizations} realizations x {config.weeks} weeks of "
        f"{series.name}")
    bootstrap_job = _bootstrap(series, config, apply_options)
    forecasts = member_forecasts(series.values, config.weeks, series.period)
    return DemoRun(
        config=config,
        series=series,
        sources=[(s.name, s.source) for s in weekly] + [("M3 monthly", data.M3_SOURCE),
                                                        ("M3 quarterly", data.M3_QUARTERLY_SOURCE)],
        member_names=list(members(series.period)),
        members=forecasts,
        ensemble=trimmed_mean(forecasts),
        bootstrap=bootstrap_job,
        calibration=calibration.summary(scores),
        calibration_wall_s=calibration_wall_s,
        evaluation=evaluation_job,
        total_s=time.perf_counter() - started,
    )


def _evaluate(config: DemoConfig, apply_options: dict) -> EvaluationJob:
    """The monthly job, then the quarterly series at their official split only (a smaller job;
    its rows go to a directory of their own)."""
    series = data.m3_monthly()[:config.m3_series]
    tasks = evaluation.evaluation_tasks(series, config.training_ends)
    output = str(Path(config.out) / "evaluation")
    started = time.perf_counter()
    mape, official, dataset = evaluation.run(tasks, output, **apply_options)
    wall_s = time.perf_counter() - started
    quarterly_tasks = evaluation.evaluation_tasks(
        data.m3_quarterly()[:config.m3_series], 1, evaluation.QUARTERLY_HORIZON,
        evaluation.QUARTERLY_PERIOD)
    quarterly_output = str(Path(config.out) / "evaluation-quarterly")
    _, quarterly, _ = evaluation.run(quarterly_tasks, quarterly_output, **apply_options)
    origins = sum(len(task.training_ends) for task in tasks)
    return EvaluationJob(mape, official, quarterly, len(quarterly_tasks), len(tasks), origins,
                         dataset.num_rows, output, wall_s)


def _bootstrap(series: data.Series, config: DemoConfig, apply_options: dict) -> BootstrapJob:
    scenario = bootstrap.scenario(series.values, series.period, "paper")
    started = time.perf_counter()
    paths, results = bootstrap.run_realizations([scenario], config.realizations, config.weeks,
                                                config.seed, **apply_options)
    wall_s = time.perf_counter() - started
    paths = paths[0]
    serial = min(config.serial_realizations, config.realizations)
    serial_paths, serial_s = _serial(scenario, serial, config)
    return BootstrapJob(
        paths=paths,
        bands=[bootstrap.quantile_band(paths, level) for level in calibration.LEVELS],
        conformal=conformal_bands(series.values, series.period, config.weeks,
                                  calibration.LEVELS),
        report=results.report,
        wall_s=wall_s,
        workers=results.report.max_workers,
        serial_realizations=serial,
        serial_s=serial_s,
        serial_matches=bool(np.array_equal(serial_paths, paths[:serial])),
    )


def _serial(scenario: Scenario, realizations: int, config: DemoConfig):
    """The first ``realizations`` run here, timed once this process is warm, as the job's
    workers are: the first realization in a process pays first-call costs (imports, caches)
    the job's workers paid in the evaluation job, and counting them here put the efficiency
    above 100 % on 2 cores."""
    bootstrap.simulate(Draw(0, realizations), [scenario], config.weeks, config.seed)  # warm
    started = time.perf_counter()
    paths = np.stack([bootstrap.simulate(Draw(0, r), [scenario], config.weeks, config.seed)
                      for r in range(realizations)])
    return paths, time.perf_counter() - started
