"""The ensemble's members: accuracy on M3's official split and cost per fit.

M3 monthly and quarterly (each series' training part forecast over its test part; mean sMAPE
and MAPE, in %), beside the published Theta figure; the monthly members were chosen on these
monthly series and the weekly hold-outs, the quarterly series check them out of sample. Then each
member's cost per fit, alone (its caches cold), on M3 monthly (18 months ahead) and on US weekly
gasoline (1 week ahead, as the bootstrap asks, and 52), and the whole ensemble's (members share
one seasonal adjustment and one smoothing fit per kind). For scale, statsmodels' ThetaModel and
ETSModel (damped trend) on the same M3 monthly series, whose fits this package's grid filters
replace.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from forecasting_demo import data, evaluation, models

COST_SERIES = 200  # M3 monthly series timed per member
WEEKLY_FITS = 300
STATSMODELS_SERIES = 50


def official_split(series: list[data.M3Series], horizon: int, period: int) -> dict:
    """Mean sMAPE and MAPE by member and ensemble at M3's official split."""
    names = [*models.members(period), evaluation.ENSEMBLE]
    smape, mape = {n: [] for n in names}, {n: [] for n in names}
    for one in series:
        history = one.values[:one.training_length]
        actual = one.values[one.training_length:one.training_length + horizon]
        each = models.member_forecasts(history, horizon, period)
        for name, forecast in zip(names, [*each, models.trimmed_mean(each)], strict=True):
            smape[name].append(np.mean(200 * np.abs(forecast - actual)
                                       / (np.abs(forecast) + np.abs(actual))))
            mape[name].append(np.mean(100 * np.abs(forecast - actual) / actual))
    return {n: (np.mean(smape[n]), np.mean(mape[n])) for n in names}


def per_fit_ms(model, histories: list[np.ndarray], horizon: int, period: float) -> float:
    """Milliseconds per call over distinct histories (so no call reuses another's fit)."""
    models._adjusted_cached.cache_clear()
    started = time.perf_counter()
    for history in histories:
        model(history, horizon, period)
    return (time.perf_counter() - started) / len(histories) * 1e3


def statsmodels_ms(histories: list[np.ndarray]) -> dict[str, float]:
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel
    from statsmodels.tsa.forecasting.theta import ThetaModel

    fits = {
        "statsmodels ThetaModel": lambda y: ThetaModel(y, period=12).fit().forecast(18),
        "statsmodels ETSModel (damped trend)": lambda y: ETSModel(
            y, trend="add", damped_trend=True).fit(disp=False).forecast(18),
    }
    costs = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings on some series: only timed here
        for name, fit in fits.items():
            started = time.perf_counter()
            for history in histories:
                fit(history)
            costs[name] = (time.perf_counter() - started) / len(histories) * 1e3
    return costs


def main():
    monthly, quarterly = data.m3_monthly(), data.m3_quarterly()
    scores = official_split(monthly, evaluation.HORIZON, evaluation.PERIOD)
    quarterly_scores = official_split(quarterly, evaluation.QUARTERLY_HORIZON,
                                      evaluation.QUARTERLY_PERIOD)
    lines = [
        "## The ensemble's members: M3 official split and cost per fit (`bench/bench_models.py`)",
        "",
        f"M3's official split: each series' training part forecast over its test part, mean "
        f"sMAPE (the competition's measure) and MAPE in %, {len(monthly):,} monthly series (18 "
        f"months) and {len(quarterly):,} quarterly series (8 quarters). Members chosen on the "
        "weekly hold-outs and M3 monthly; M3 quarterly, which no choice saw, is the "
        f"out-of-sample check. Published: {evaluation.PUBLISHED_SOURCE}.",
        "",
        "| model | monthly sMAPE | monthly MAPE | published monthly sMAPE | quarterly sMAPE "
        "| quarterly MAPE |",
        "|---|---|---|---|---|---|",
    ]
    for name, (smape, mape) in sorted(scores.items(), key=lambda item: item[1][0]):
        published = evaluation.PUBLISHED_SMAPE.get(("monthly", name))
        q_smape, q_mape = quarterly_scores[name]
        lines.append(f"| {name} | {smape:.2f} | {mape:.2f} | "
                     f"{'—' if published is None else f'{published:.2f}'} | {q_smape:.2f} | "
                     f"{q_mape:.2f} |")

    histories = [one.values[:one.training_length] for one in monthly[:COST_SERIES]]
    gasoline = data.gasoline()
    weekly = [gasoline.values[:len(gasoline.values) - k] for k in range(WEEKLY_FITS)]
    lines += [
        "",
        f"Cost per fit, ms (one process; M3 monthly: the first {COST_SERIES} series, 18 months "
        f"ahead; weekly: {WEEKLY_FITS} gasoline histories, each a week shorter). A member timed "
        "alone pays its seasonal adjustment and smoothing fit; in the ensemble members share "
        "them.",
        "",
        "| member | M3 monthly, 18 ahead | weekly, 1 ahead | weekly, 52 ahead |",
        "|---|---|---|---|",
    ]
    monthly_members = models.members(evaluation.PERIOD)
    weekly_members = models.members(gasoline.period)
    for name in dict.fromkeys([*monthly_members, *weekly_members]):
        cells = [f"{per_fit_ms(monthly_members[name], histories, 18, 12):.3f}"
                 if name in monthly_members else "—"]
        for horizon in (1, 52):
            cells.append(f"{per_fit_ms(weekly_members[name], weekly, horizon, gasoline.period):.3f}"
                         if name in weekly_members else "—")
        lines.append(f"| {name} | {' | '.join(cells)} |")
    ensemble = [f"{per_fit_ms(models.ensemble_forecast, histories, 18, 12):.3f}"] + [
        f"{per_fit_ms(models.ensemble_forecast, weekly, h, gasoline.period):.3f}" for h in (1, 52)]
    lines.append(f"| **ensemble** | {' | '.join(ensemble)} |")
    for name, cost in statsmodels_ms(histories[:STATSMODELS_SERIES]).items():
        lines.append(f"| {name} | {cost:.1f} | — | — |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
