"""The sample of element times alone: its median, and its bound."""

import random
import statistics

from gpar.durations import SAMPLE_SIZE, DurationSample


def test_the_median_of_a_few_times():
    sample = DurationSample()
    assert [sample.add(t) for t in (3.0, 1.0, 2.0)] == [3.0, 3.0, 2.0]
    assert sample.add(10.0) == 3.0  # of four, the upper middle


def test_the_sample_stays_bounded_and_keeps_the_middle():
    draw = random.Random(0)
    times = [draw.lognormvariate(0.0, 0.25) for _ in range(5 * SAMPLE_SIZE)]
    sample = DurationSample()
    for seconds in times:
        median = sample.add(seconds)
    assert len(sample) == SAMPLE_SIZE
    assert abs(median - statistics.median(times)) < 0.02  # dropping both extremes keeps it


def test_a_tail_of_slow_times_barely_moves_the_median():
    sample = DurationSample()
    for _ in range(1000):
        sample.add(1.0)
    for _ in range(20):
        median = sample.add(100.0)
    assert median == 1.0
