"""``forecasting-demo`` / ``python -m forecasting_demo``: run the demo, write its report."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from forecasting_demo import pipeline, report
from forecasting_demo.data import DEMO_SERIES


def parser() -> argparse.ArgumentParser:
    defaults = pipeline.DemoConfig(out=Path("demo-output"))
    parse = argparse.ArgumentParser(
        prog="forecasting-demo",
        description="The paper's forecasting application on gpar: an ensemble of five models, "
                    "bootstrap bands fanned out over Ray, their calibration on held-out years, "
                    "and a forecast evaluation on the M3 monthly series reduced with SQL.")
    parse.add_argument("--series", choices=list(DEMO_SERIES), default=defaults.series,
                       help="weekly series to forecast and band (default: %(default)s)")
    parse.add_argument("--realizations", type=_positive, default=defaults.realizations,
                       help="bootstrap realizations (default: %(default)s)")
    parse.add_argument("--weeks", type=_positive, default=defaults.weeks,
                       help="weeks each realization runs ahead (default: %(default)s)")
    parse.add_argument("--out", type=Path, default=defaults.out,
                       help="directory for report.md, its figures and the evaluation's rows "
                            "(default: %(default)s)")
    parse.add_argument("--address", default=None,
                       help="Ray cluster address (default: RAY_ADDRESS, else an embedded local "
                            "cluster)")
    parse.add_argument("--paper-scale", action="store_true",
                       help="1,000 realizations x 52 weeks and the full evaluation "
                            f"({pipeline.PAPER_SCALE['training_ends']} training ends of all M3 "
                            "monthly series)")
    sizes = parse.add_argument_group("job sizes")
    sizes.add_argument("--holdout-years", type=_positive, default=defaults.holdout_years,
                       help="yearly hold-outs per weekly series for the calibration "
                            "(default: %(default)s)")
    sizes.add_argument("--calibration-realizations", type=_positive,
                       default=defaults.calibration_realizations,
                       help="realizations per bootstrap band in the calibration "
                            "(default: %(default)s)")
    sizes.add_argument("--m3-series", type=_positive, default=None,
                       help="the first N M3 monthly series (default: all 1,428)")
    sizes.add_argument("--training-ends", type=_positive, default=defaults.training_ends,
                       help="training ends per M3 series, a year apart (default: %(default)s)")
    sizes.add_argument("--serial-realizations", type=_positive,
                       default=defaults.serial_realizations,
                       help="realizations re-run serially to measure the speedup "
                            "(default: %(default)s)")
    sizes.add_argument("--seed", type=int, default=defaults.seed,
                       help="root of every realization's random stream (default: %(default)s)")
    return parse


def config_from(arguments: argparse.Namespace) -> pipeline.DemoConfig:
    values = {field.name: getattr(arguments, field.name)
              for field in dataclasses.fields(pipeline.DemoConfig)
              if hasattr(arguments, field.name)}
    if arguments.paper_scale:
        values.update(pipeline.PAPER_SCALE, m3_series=None)
    return pipeline.DemoConfig(**values)


def main(argv: list[str] | None = None) -> int:
    config = config_from(parser().parse_args(argv))
    run = pipeline.run(config, say=lambda line: print(line, file=sys.stderr, flush=True))
    path = report.write(run, Path(config.out))
    for line in report.summary_lines(run):
        print(line)
    print(f"report: {path}")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value
