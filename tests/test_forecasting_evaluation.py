"""The evaluation's mapper: its rows, their schema and the error formula, for one M3 series."""

import numpy as np
import pandas as pd
import pytest

from forecasting_demo import data, evaluation, models

COLUMNS = ["series", "model", "training_end", "forecast_date", "horizon", "forecast", "actual",
           "error"]


@pytest.fixture(scope="module")
def m3():
    return data.m3_monthly()


def test_m3_monthly_loads_offline_with_values_safe_for_percentage_errors(m3):
    assert len(m3) == 1428
    assert min(series.values.min() for series in m3) >= 10
    assert all(len(s.values) == s.training_length + evaluation.HORIZON for s in m3)


def test_rows_hold_each_models_forecast_actual_and_relative_error(m3):
    series = m3[0]
    task = evaluation.evaluation_tasks([series], training_ends=2)[0]
    both = evaluation.evaluate_one(task)
    assert list(both.columns) == COLUMNS
    assert len(both) == 2 * (len(models.members(12)) + 1) * evaluation.HORIZON
    assert set(both.model) == {*models.members(12), "ensemble"}
    assert both.dtypes[["training_end", "forecast_date", "horizon"]].map(
        lambda dtype: dtype.kind).tolist() == ["i", "i", "i"]
    assert both.dtypes[["forecast", "actual", "error"]].map(
        lambda dtype: dtype.kind).tolist() == ["f", "f", "f"]
    rows = both[both.training_end == series.training_length]

    history = series.values[:series.training_length]
    actual = series.values[series.training_length:]
    members = models.member_forecasts(history, evaluation.HORIZON, evaluation.PERIOD)
    direct = {**dict(zip(models.members(12), members, strict=True)),
              "ensemble": models.trimmed_mean(members)}
    for model, forecast in direct.items():
        mine = rows[rows.model == model].sort_values("horizon")
        assert mine.horizon.tolist() == list(range(1, 19))
        assert (mine.series == series.name).all()
        assert (mine.training_end == series.training_length).all()
        assert mine.forecast_date.tolist() == list(range(series.training_length + 1,
                                                         series.training_length + 19))
        np.testing.assert_array_equal(mine.forecast, forecast)
        np.testing.assert_array_equal(mine.actual, actual)
        np.testing.assert_allclose(mine.error, (forecast - actual) / actual, rtol=1e-15)


def test_training_ends_step_back_a_year_and_skip_ends_too_short_for_the_models():
    short = data.M3Series("S", np.arange(10.0, 10.0 + 48 + 18), training_length=48)
    [task] = evaluation.evaluation_tasks([short], training_ends=3)
    assert task.training_ends == (48, 36)  # 24 < three seasons
    assert len(task.values) == 48 + 18


@pytest.mark.usefixtures("cluster")
def test_the_job_writes_every_row_once_and_sql_gives_mape_by_model_and_horizon(m3, tmp_path):
    tasks = evaluation.evaluation_tasks(m3[:6], training_ends=2)
    mape, official, dataset = evaluation.run(tasks, str(tmp_path / "evaluation"),
                                             progress=False)
    direct = pd.concat([evaluation.evaluate_one(task) for task in tasks])
    assert dataset.num_rows == len(direct)
    expected = direct.groupby("model").error.apply(lambda e: 100 * e.abs().mean())
    assert mape.set_index("model")["all"].to_dict() == pytest.approx(expected.to_dict())
    assert mape["all"].is_monotonic_increasing
    # the official split: each series' own training length, sMAPE as M3 defines it
    split = direct[direct.training_end == direct.series.map(
        {s.name: s.training_length for s in m3[:6]})]
    smape = split.assign(s=200 * (split.forecast - split.actual).abs()
                         / (split.forecast.abs() + split.actual.abs())).groupby("model").s.mean()
    assert official.set_index("model").smape.to_dict() == pytest.approx(smape.to_dict())
    assert (official.series == 6).all()


def test_official_split_sql_scores_only_each_series_last_training_end():
    import duckdb

    rows = pd.DataFrame({
        "series": ["a", "a", "a", "b"], "model": ["m"] * 4, "training_end": [36, 48, 48, 20],
        "forecast": [1.0, 3.0, 1.0, 2.0], "actual": [100.0, 1.0, 1.0, 2.0]})
    rows["error"] = (rows.forecast - rows.actual) / rows.actual
    connection = duckdb.connect()
    connection.register("data", rows)
    table = connection.sql(evaluation.OFFICIAL_SPLIT_SQL).to_df().set_index("model")
    # rows 2-4: sMAPE 200 * 2/4, 0, 0; MAPE 200 %, 0, 0
    assert table.smape["m"] == pytest.approx(100 / 3)
    assert table.mape["m"] == pytest.approx(200 / 3)
    assert table.series["m"] == 2


def test_quarterly_tasks_step_back_by_four_quarters():
    quarterly = data.m3_quarterly()
    assert len(quarterly) == 756
    [task] = evaluation.evaluation_tasks(quarterly[:1], 2, evaluation.QUARTERLY_HORIZON,
                                         evaluation.QUARTERLY_PERIOD)
    length = quarterly[0].training_length
    assert task.training_ends == (length, length - 4) and task.period == 4
    rows = evaluation.evaluate_one(task)
    assert set(rows.horizon) == set(range(1, 9))


def test_mape_sql_averages_absolute_errors_by_model_and_horizon_block():
    import duckdb

    rows = pd.DataFrame({"model": ["a", "a", "a", "b"], "horizon": [1, 7, 13, 1],
                         "error": [0.1, -0.3, 0.2, -0.05]})
    connection = duckdb.connect()
    connection.register("data", rows)
    mape = connection.sql(evaluation.MAPE_SQL).to_df().set_index("model")
    assert mape.loc["a", "h 1-6"] == pytest.approx(10.0)
    assert mape.loc["a", "h 7-12"] == pytest.approx(30.0)
    assert mape.loc["a", "all"] == pytest.approx(20.0)
    assert mape.index.tolist() == ["b", "a"]  # best first
