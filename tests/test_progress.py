"""The status line of a live `stockmax run`, from two samples of its topics (stockmax/progress.py)."""

from stockmax.progress import Sample, status_line

KINDS = ("max_updates", "alerts", "rollups", "late", "duplicates", "dead")


def _sample(at, in_topic, committed, outputs, newest):
    return Sample(at, in_topic, committed, dict(zip(KINDS, outputs)), newest)


def test_status_line_says_rates_lag_and_counts():
    before = _sample(100.0, 50_000, 40_000, (1000, 10, 100, 0, 0, 2), 1_000_000)
    now = _sample(105.0, 150_000, 130_000, (51_000, 12, 1100, 3, 4, 7), 8_000_000)
    assert status_line(before, now, wall_clock_us=10_500_000) == (
        "records in 20,000/s | not yet committed 20,000 (1.0 s of input) | outputs committed ~10,200/s | "
        "alerts 12 | event time 2.5 s behind the clock | dead letters 7, late 3, duplicates 4")


def test_event_time_far_behind_is_said_in_hours():
    sample = _sample(1.0, 0, 0, (0,) * 6, 0)
    assert "event time 27.8 h behind the clock" in status_line(sample, sample, wall_clock_us=100_000_000_000)


def test_status_line_of_a_quiet_feed_before_any_output():
    sample = _sample(1.0, 0, 0, (0,) * 6, None)
    assert status_line(sample, sample._replace(at=6.0), wall_clock_us=0) == (
        "records in 0/s | not yet committed 0 | outputs committed ~0/s | alerts 0 | event time - | "
        "dead letters 0, late 0, duplicates 0")
