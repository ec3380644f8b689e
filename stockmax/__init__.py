"""stockmax: sliding max/min, spike alerts and rolled-up history for market ticks on Apache Flink."""

__version__ = "0.1.0"
