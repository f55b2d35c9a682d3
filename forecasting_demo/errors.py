"""Every error forecasting_demo raises, as one tree.

    ForecastingDemoError
    ├── SeriesTooShort      a series has fewer observations than a model or backtest needs
    ├── NonPositiveForecast a multiplicative band around a forecast that is not above zero
    └── UnknownSeries       a series name the demo does not ship
"""


class ForecastingDemoError(Exception):
    """Base class of every error forecasting_demo raises."""


class SeriesTooShort(ForecastingDemoError, ValueError):
    """A series is shorter than what a model or a backtest needs."""


class NonPositiveForecast(ForecastingDemoError, ValueError):
    """The ensemble forecast a value <= 0: a band of forecast × exp(±q) would be inverted."""


class UnknownSeries(ForecastingDemoError, KeyError):
    """A series name that is not one of the demo's series."""
