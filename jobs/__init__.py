"""PyFlink jobs: thin adapters that wire stockmax.operators into a Flink DataStream pipeline."""
