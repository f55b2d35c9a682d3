"""The run's report: report.md with its figures beside it, and summary.json with its numbers.

Every number is read from the DemoRun the pipeline returned; nothing here computes a result.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from forecasting_demo import calibration
from forecasting_demo import evaluation as m3
from forecasting_demo.bootstrap import BACKTEST_WEEKS, BLOCK_WEEKS
from forecasting_demo.models import WEEKLY_YEARS
from forecasting_demo.pipeline import DemoRun

FAN_LINES = 100  # realizations drawn in the fan chart
FIGURES = ("ensemble.png", "fan.png", "cdf.png", "calibration.png")
METHOD_NAMES = {
    "paper": "paper: independent one-week factors",
    "block": "block bootstrap of one-week factors",
    "conformal": "conformal, from h-week backtests",
}


def write(run: DemoRun, out: Path) -> Path:
    """Write report.md, its figures and summary.json into ``out``; return report.md's path."""
    out.mkdir(parents=True, exist_ok=True)
    _plot_ensemble(run, out / "ensemble.png")
    _plot_fan(run, out / "fan.png")
    run.bootstrap.report.plot_cdf(str(out / "cdf.png"))
    _plot_calibration(run, out / "calibration.png")
    (out / "summary.json").write_text(json.dumps(headline(run), indent=2) + "\n")
    path = out / "report.md"
    path.write_text(markdown(run))
    return path


def headline(run: DemoRun) -> dict:
    """The numbers the terminal summary and summary.json give."""
    job = run.bootstrap
    coverage = run.calibration.query("weeks == 'all'")
    return {
        "series": run.series.name,
        "realizations": len(job.paths),
        "weeks": job.paths.shape[1],
        "bootstrap_wall_s": job.wall_s,
        "serial_s_per_realization": job.serial_s / job.serial_realizations,
        "speedup": job.speedup,
        "efficiency": job.efficiency,
        "workers": job.workers,
        "coverage": {
            f"{row.series}/{row.method}/{row.level:g}": row.coverage
            for row in coverage.itertuples()
        },
        "coverage_se": {
            f"{row.series}/{row.method}/{row.level:g}": _known(row.coverage_se)
            for row in coverage.itertuples()
        },
        "winkler_95": {
            f"{row.series}/{row.method}": row.winkler
            for row in coverage.query("level == 0.95 and series != 'all'").itertuples()
        },
        "winkler_95_per_actual": {
            f"{row.series}/{row.method}": row.winkler_ratio
            for row in coverage.query("level == 0.95").itertuples()
        },
        "mape_all": dict(zip(run.evaluation.mape.model, run.evaluation.mape["all"], strict=True)),
        "m3_official_split": {
            "monthly": _by_model(run.evaluation.official),
            "quarterly": _by_model(run.evaluation.quarterly),
            "published_smape": {f"{subset}/{model}": value
                                for (subset, model), value in m3.PUBLISHED_SMAPE.items()},
            "published_source": m3.PUBLISHED_SOURCE,
        },
        "evaluation_rows": run.evaluation.rows,
        "total_s": run.total_s,
    }


def summary_lines(run: DemoRun) -> list[str]:
    """What the command prints when it is done."""
    job, numbers = run.bootstrap, headline(run)
    lines = [
        f"bootstrap: {len(job.paths)} realizations x {job.paths.shape[1]} weeks of "
        f"{run.series.name} in {job.wall_s:.1f} s on {job.workers} workers; speedup "
        f"{job.speedup:.2f} over serial (efficiency {job.efficiency:.0%})" + (
            "; above 100 %: a serial realization here took longer than one on a worker "
            "(this machine was busier meanwhile)" if job.efficiency > 1 else ""),
        "coverage of the nominal 95 % band on hold-outs:",
    ]
    for key, value in numbers["coverage"].items():
        if key.endswith("/0.95"):
            error = numbers["coverage_se"][key]
            lines.append(f"  {key.removesuffix('/0.95'):<20} {_with_error(value, error)}")
    best = run.evaluation.mape.iloc[0]
    lines.append(f"M3 evaluation: {run.evaluation.rows:,} rows; best MAPE {best['all']:.2f} % "
                 f"({best.model})")
    official = run.evaluation.official.set_index("model")
    if m3.ENSEMBLE in official.index:
        lines.append(f"M3 monthly, official split: ensemble sMAPE "
                     f"{official.smape[m3.ENSEMBLE]:.2f} (published Theta "
                     f"{m3.PUBLISHED_SMAPE[('monthly', 'theta')]:.2f})")
    lines.append(f"total {run.total_s:.0f} s")
    return lines


def markdown(run: DemoRun) -> str:
    config, job, evaluation = run.config, run.bootstrap, run.evaluation
    table1 = job.report.table1()
    serial_per = job.serial_s / job.serial_realizations
    sections = [
        "# Forecasting demo: ensemble, bootstrap bands, calibration, evaluation\n",
        f"Series `{run.series.name}` ({run.series.unit}), {len(run.series.values):,} weeks to "
        f"{run.series.dates[-1].date()}; {len(job.paths):,} realizations × "
        f"{job.paths.shape[1]} weeks; seed {config.seed}. The run took {run.total_s:.1f} s.\n",
        "## Data\n",
        _table(pd.DataFrame(run.sources, columns=["data", "source"])),
        "## Ensemble forecast (paper Figure 4)\n",
        f"Five models refitted at every forecast, combined by the 20 %-trimmed mean at each "
        f"horizon (one member dropped from each end): seasonal naive; a dynamic harmonic "
        f"regression (weekly changes on a drift and Fourier terms, AR errors); Holt's linear "
        f"trend, damped trend and Theta on the last {WEEKLY_YEARS} years without their Fourier "
        f"season. Forecast of week 1 / {job.paths.shape[1]}:\n",
        _table(pd.DataFrame({
            "model": [*run.member_names, "ensemble"],
            "week 1": [*run.members[:, 0], run.ensemble[0]],
            f"week {job.paths.shape[1]}": [*run.members[:, -1], run.ensemble[-1]],
        }), "{:.3f}"),
        "![ensemble](ensemble.png)\n",
        "## Bootstrap bands (paper Figures 5 and 6)\n",
        f"Each realization forecasts one week ahead with the ensemble, multiplies the forecast by "
        f"an adjusting factor (actual ÷ forecast) drawn independently from the one-week-out "
        f"factors of a rolling backtest over the last {BACKTEST_WEEKS} weeks (the paper's "
        f"method), and appends it as an actual. Shaded: the paper's 95 % band around the "
        f"realizations; dashed: the calibrated (conformal) 95 % band around the ensemble's direct "
        f"{job.paths.shape[1]}-week forecast.\n",
        _table(_band_table(run), "{:.3f}"),
        "![fan chart](fan.png)\n",
        "## The bootstrap job (paper Table 1 and Figure 8)\n",
        f"{len(job.paths):,} realizations ran in {job.wall_s:.2f} s on {job.workers} workers "
        f"(`gpar.apply`, warm cluster). Serially, in this process, the first "
        f"{job.serial_realizations} of the same realizations took {serial_per * 1000:.1f} ms "
        f"each ({serial_per / job.paths.shape[1] * 1000:.3f} ms per forecast): speedup "
        f"**{job.speedup:.2f}** = serial seconds per realization ÷ the job's wall seconds per "
        f"realization, parallel efficiency **{job.efficiency:.0%}** on {job.workers} workers. "
        f"The serial realizations equal the job's bit for bit: "
        f"{'yes' if job.serial_matches else 'NO'}. In the job a realization ran "
        f"{table1.loc['run', 'mean_s'] * 1000:.1f} ms on average against "
        f"{serial_per * 1000:.1f} ms serially; a longer time in the job means its workers got "
        f"less CPU than this process did (the machine's other processes share the cores).\n",
        _table(table1.reset_index(names="time"), "{:.4f}"),
        "![runtime CDF](cdf.png)\n",
        "## Calibration on held-out years\n",
        f"{config.holdout_years} yearly hold-outs of each weekly series; every method sees only "
        f"the weeks before its hold-out ({config.calibration_realizations} realizations per "
        f"bootstrap band, {run.calibration_wall_s:.1f} s). Share of held-out weeks inside the "
        f"band, by weeks ahead, and the mean Winkler (interval) score (lower is better). The "
        f"weeks of one hold-out share one path, so the standard error (se) of the coverage is "
        f"taken across hold-outs, as if they were independent (years of one series are not "
        f"quite):\n",
        _table(_calibration_table(run.calibration), None),
        "Winkler 95 % ÷ actual, for reference, of R's forecast package (8.20) on the same "
        "hold-outs: " + "; ".join(
            f"{series} " + ", ".join(f"{method} {value:g}" for method, value in scores.items())
            for series, scores in calibration.R_WINKLER_95_PER_ACTUAL.items()) + ".\n",
        "* **paper**: the bootstrap above, each week's factor drawn independently. Real "
        "one-week errors persist from week to week, and the ensemble's misfit of trend and "
        "season grows with the horizon; independent draws see neither, so the band is narrow.\n"
        f"* **block**: the same bootstrap drawing runs of {BLOCK_WEEKS} consecutive backtest "
        "factors (a moving-block bootstrap), which keeps their persistence. The block length was "
        "chosen among 13, 26 and 52 weeks on the five most recent of these hold-outs.\n"
        f"* **conformal**: the ensemble's direct forecast × exp(±q_h), q_h the split-conformal "
        "quantile of |log(actual ÷ forecast)| at horizon h over every backtest origin before "
        "the hold-out. No simulation; it measures the h-week errors directly. Every origin "
        f"rather than the last {BACKTEST_WEEKS} (the bootstrap's backtest) was chosen on these "
        "same hold-outs.\n",
        "![calibration](calibration.png)\n",
        "## Forecast evaluation: MAPE on M3 monthly (paper §5.5)\n",
        f"{evaluation.tasks:,} tasks, one per series, {evaluation.origins:,} (series, training "
        f"end) pairs (up to {config.training_ends} training ends a year apart) fanned out with "
        f"`gpar.apply(..., output=)` in {evaluation.wall_s:.1f} s (this job paid the cluster's "
        f"cold start); {evaluation.rows:,} rows in `{evaluation.output}`. MAPE (%) by model and "
        f"horizon (months), computed by DuckDB SQL over those rows:\n",
        _table(evaluation.mape, "{:.2f}"),
        "## M3 official split: sMAPE beside the published figures\n",
        f"Each M3 series' training part forecast over its test part (monthly: 18 months, "
        f"{_count(evaluation.official)} series; quarterly: 8 quarters, "
        f"{_count(evaluation.quarterly)} series), mean sMAPE = 200 |F − A| ÷ (|F| + |A|) (the "
        f"competition's measure) and MAPE, in %. On monthly and quarterly data the members are "
        f"seasonal naive, SES, Holt, damped trend and Theta, each on the whole series, "
        f"seasonally adjusted by classical multiplicative decomposition where the season is "
        f"significant. The members were chosen on the weekly hold-outs and M3 monthly; M3 "
        f"quarterly, which no choice saw, checks them out of sample. Published: "
        f"{m3.PUBLISHED_SOURCE}.\n",
        _table(_official_table(evaluation), None),
    ]
    return "\n".join(sections)


def _by_model(table: pd.DataFrame) -> dict:
    return {row.model: {"smape": row.smape, "mape": row.mape} for row in table.itertuples()}


def _count(table: pd.DataFrame) -> int:
    return int(table.series.max()) if len(table) else 0


def _official_table(evaluation) -> pd.DataFrame:
    monthly = evaluation.official.set_index("model")
    quarterly = evaluation.quarterly.set_index("model")
    rows = []
    for model in monthly.index:
        published = m3.PUBLISHED_SMAPE.get(("monthly", model))
        row = {"model": model,
               "monthly sMAPE": f"{monthly.smape[model]:.2f}",
               "monthly MAPE": f"{monthly.mape[model]:.2f}",
               "published monthly sMAPE": "—" if published is None else f"{published:.2f}"}
        if model in quarterly.index:
            row["quarterly sMAPE"] = f"{quarterly.smape[model]:.2f}"
            row["quarterly MAPE"] = f"{quarterly.mape[model]:.2f}"
        rows.append(row)
    return pd.DataFrame(rows)


def _band_table(run: DemoRun) -> pd.DataFrame:
    job = run.bootstrap
    weeks = sorted({1, 13, 26, job.paths.shape[1]} & set(range(1, job.paths.shape[1] + 1)))
    index = np.array(weeks) - 1
    columns = {"week": weeks, "ensemble": run.ensemble[index]}
    for kind, bands in (("paper", job.bands), ("conformal", job.conformal)):
        for band in bands:
            columns[f"{kind} {band.level:.0%} lower"] = band.lower[index]
            columns[f"{kind} {band.level:.0%} upper"] = band.upper[index]
    return pd.DataFrame(columns)


def _calibration_table(summary: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for series, method in itertools.product(dict.fromkeys(summary.series), METHOD_NAMES):
        group = summary[(summary.series == series) & (summary.method == method)]
        row = {"series": series, "method": METHOD_NAMES[method]}
        at_95 = group[group.level == 0.95].set_index("weeks")
        at_80 = group[group.level == 0.8].set_index("weeks")
        for weeks, value in at_95.coverage.drop("all").items():
            row[f"95 % weeks {weeks}"] = f"{value:.1%}"
        row["95 % all ± se"] = _with_error(at_95.coverage["all"],
                                           _known(at_95.coverage_se["all"]))
        row["80 % all"] = f"{at_80.coverage['all']:.1%}"
        pooled = series == "all"  # a Winkler score is in the series' unit: not poolable
        row["Winkler 95 %"] = "—" if pooled else f"{at_95.winkler['all']:.3f}"
        row["Winkler 80 %"] = "—" if pooled else f"{at_80.winkler['all']:.3f}"
        row["Winkler 95 % ÷ actual"] = f"{at_95.winkler_ratio['all']:.4f}"
        rows.append(row)
    return pd.DataFrame(rows)


def _known(value: float) -> float | None:
    """NaN (a standard error from one hold-out) as None, which JSON can carry."""
    return None if np.isnan(value) else float(value)


def _with_error(value: float, error: float | None) -> str:
    return f"{value:.1%}" if error is None else f"{value:.1%} ± {error * 100:.1f} pp"


def _table(frame: pd.DataFrame, number_format: str | None = "{:.3f}") -> str:
    """A Markdown table; floats in ``number_format``, everything else as str."""
    def cell(value) -> str:
        if number_format and isinstance(value, float | np.floating):
            return number_format.format(value)
        return str(value)

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join([header, rule, *body]) + "\n"


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _future_dates(run: DemoRun) -> pd.DatetimeIndex:
    last = run.series.dates[-1]
    return pd.date_range(last + pd.Timedelta(weeks=1), periods=run.bootstrap.paths.shape[1],
                         freq=pd.Timedelta(weeks=1))


def _plot_ensemble(run: DemoRun, path: Path) -> None:
    plt = _figure()
    figure, axes = plt.subplots(figsize=(9, 4.5))
    shown = 2 * round(run.series.period)
    axes.plot(run.series.dates[-shown:], run.series.values[-shown:], color="black", lw=1,
              label="actual")
    future = _future_dates(run)
    for name, forecast in zip(run.member_names, run.members, strict=True):
        axes.plot(future, forecast, lw=0.9, alpha=0.8, label=name)
    axes.plot(future, run.ensemble, color="crimson", lw=2.2, label="ensemble (trimmed mean)")
    axes.set_title(f"{run.series.name}: five members and their ensemble")
    axes.set_ylabel(run.series.unit)
    axes.legend(fontsize=8, ncol=2)
    axes.grid(alpha=0.3)
    _save(plt, figure, path)


def _plot_fan(run: DemoRun, path: Path) -> None:
    plt = _figure()
    job = run.bootstrap
    figure, axes = plt.subplots(figsize=(9, 4.5))
    shown = round(run.series.period)
    axes.plot(run.series.dates[-shown:], run.series.values[-shown:], color="black", lw=1,
              label="actual")
    future = _future_dates(run)
    drawn = job.paths[:FAN_LINES]
    for realization in drawn:
        axes.plot(future, realization, color="grey", lw=0.4, alpha=0.35)
    paper_95, conformal_95 = job.bands[0], job.conformal[0]
    axes.fill_between(future, paper_95.lower, paper_95.upper, color="tab:blue", alpha=0.25,
                      label=f"paper's {paper_95.level:.0%} band")
    for bound, label in ((conformal_95.lower, f"calibrated {conformal_95.level:.0%} band"),
                         (conformal_95.upper, None)):
        axes.plot(future, bound, color="tab:orange", ls="--", lw=1.4, label=label)
    axes.plot(future, np.median(job.paths, axis=0), color="tab:blue", lw=1.6,
              label="realizations' median")
    axes.plot(future, run.ensemble, color="crimson", lw=1.6,
              label="ensemble's direct forecast")
    axes.set_title(f"{run.series.name}: {len(job.paths):,} bootstrap realizations "
                   f"({len(drawn)} drawn)")
    axes.set_ylabel(run.series.unit)
    axes.legend(fontsize=8, loc="upper left")
    axes.grid(alpha=0.3)
    _save(plt, figure, path)


def _plot_calibration(run: DemoRun, path: Path) -> None:
    plt = _figure()
    at_95 = run.calibration.query("level == 0.95 and weeks != 'all'")
    series = list(dict.fromkeys(at_95.series))
    figure, all_axes = plt.subplots(1, len(series), figsize=(4 * len(series), 3.8), sharey=True,
                                    squeeze=False)
    for axes, name in zip(all_axes[0], series, strict=True):
        for method, group in at_95[at_95.series == name].groupby("method", sort=False):
            axes.plot(group.weeks, group.coverage, marker="o", label=METHOD_NAMES[method])
        axes.axhline(0.95, color="black", ls=":", lw=1)
        axes.set_title(f"{'both series' if name == 'all' else name}: 95 % band coverage")
        axes.set_xlabel("weeks ahead")
        axes.set_ylim(0, 1.02)
        axes.grid(alpha=0.3)
    all_axes[0][0].set_ylabel("share of held-out weeks inside")
    all_axes[0][0].legend(fontsize=7, loc="lower left")
    _save(plt, figure, path)
