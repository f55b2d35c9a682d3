"""The demo end to end on a tiny configuration: every artefact, every number from the run."""

import json
import subprocess
import sys

import numpy as np
import pytest

import reduce_sql
from forecasting_demo import cli, pipeline, report

pytestmark = pytest.mark.usefixtures("cluster")

TINY = ["--realizations", "12", "--weeks", "6", "--holdout-years", "1",
        "--calibration-realizations", "4", "--m3-series", "4", "--training-ends", "2",
        "--serial-realizations", "3"]
ARTEFACTS = ["report.md", "summary.json", *report.FIGURES]


def test_the_command_writes_every_artefact_and_prints_a_summary(tmp_path, capsys):
    assert cli.main([*TINY, "--out", str(tmp_path), "--series", "co2"]) == 0
    for name in ARTEFACTS:
        assert (tmp_path / name).stat().st_size > 0, name
    assert reduce_sql.Dataset(tmp_path / "evaluation").num_rows == 4 * 2 * 6 * 18
    printed = capsys.readouterr().out
    assert "12 realizations x 6 weeks of co2" in printed
    assert f"report: {tmp_path / 'report.md'}" in printed


def test_module_entry_point_and_paper_scale_flag():
    completed = subprocess.run([sys.executable, "-m", "forecasting_demo", "--help"],
                               capture_output=True, text=True, check=True)
    assert "--paper-scale" in completed.stdout and "--address" in completed.stdout
    config = cli.config_from(cli.parser().parse_args(["--paper-scale", "--m3-series", "3"]))
    assert (config.realizations, config.weeks, config.m3_series) == (1000, 52, None)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    config = cli.config_from(cli.parser().parse_args([*TINY, "--out", str(out)]))
    run = pipeline.run(config, say=lambda line: None)
    return run, report.write(run, out).read_text(), out


def test_report_numbers_are_the_runs(tiny_run):
    run, text, _ = tiny_run
    job = run.bootstrap
    assert f"speedup **{job.speedup:.2f}**" in text
    assert f"efficiency **{job.efficiency:.0%}**" in text
    assert f"in {job.wall_s:.2f} s on {job.workers} workers" in text
    for name, row in job.report.table1().iterrows():
        assert f"| {name} | {row.mean_s:.4f} | {row.p95_s:.4f} | {row.n:.0f} |" in text
    for model, forecast in zip(run.member_names, run.members[:, 0], strict=True):
        assert f"| {model} | {forecast:.3f} |" in text
    for row in run.evaluation.official.itertuples():
        assert f"| {row.model} | {row.smape:.2f} | {row.mape:.2f} |" in text
    assert "| theta | " in text and " | 13.85 | " in text  # the published figure beside it
    for row in run.calibration.query("level == 0.95 and weeks == 'all'").itertuples():
        assert f"| {row.winkler_ratio:.4f} |" in text
    paper_95 = job.bands[0]
    assert f"| {paper_95.lower[0]:.3f} | {paper_95.upper[0]:.3f} |" in text
    for row in run.calibration.query("level == 0.95 and weeks == 'all'").itertuples():
        assert f"| {row.series} | {report.METHOD_NAMES[row.method]} |" in text
        winkler = "—" if row.series == "all" else f"{row.winkler:.3f}"  # units differ
        assert f"{row.coverage:.1%}" in text and f"| {winkler} |" in text
    assert json.loads((tiny_run[2] / "summary.json").read_text()) == report.headline(run)


def test_band_and_mape_in_the_report_are_recomputed_from_paths_and_rows(tiny_run):
    run, text, out = tiny_run
    lower, upper = np.quantile(run.bootstrap.paths, [0.025, 0.975], axis=0)
    assert np.array_equal(run.bootstrap.bands[0].lower, lower)
    assert np.array_equal(run.bootstrap.bands[0].upper, upper)
    rows = reduce_sql.Dataset(out / "evaluation").to_pandas()
    mape = rows.groupby("model").error.apply(lambda error: 100 * error.abs().mean())
    for model, value in mape.items():
        assert f"| {model} | " in text
        assert f" | {value:.2f} | {(rows.model == model).sum()} |" in text
