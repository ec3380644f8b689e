"""The baselines of the live benchmark: what a Flink SQL user would write instead of stockmax, run live on the
same per-tick JSON topic with the same settings (STOCKMAX_*: topics, checkpoint interval, watermark bound),
its results written exactly-once to the max-updates topic as JSON with the tick's event time (µs), until
SIGINT. bench/live.py starts it as it starts `stockmax run`.

    over  MAX/MIN(price) OVER (PARTITION BY symbol ORDER BY event_ts RANGE BETWEEN W PRECEDING AND CURRENT ROW),
          one SELECT per window of STOCKMAX_WINDOWS (Flink SQL computes one OVER window per SELECT), joined by
          UNION ALL into one sink: the sliding max at each tick, what stockmax's max updates are
    hop   HOP(TABLE ticks, 1 s slide, 1 min size) MAX/MIN per symbol: the window TVF, one result per symbol and
          second (its event time: the newest tick's of the window)
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("variant", choices=["over", "hop"])
    args = parser.parse_args()

    from pyflink.table import EnvironmentSettings, TableEnvironment

    from stockmax import config
    from stockmax.flink_env import local_configuration
    from stockmax.jobs.kafka_tables import kafka_options, sql_interval, sql_literal, sql_options
    from stockmax.operators.durations import format_duration

    settings = config.load()
    conf = local_configuration(settings)
    t_env = TableEnvironment.create(EnvironmentSettings.new_instance().in_streaming_mode().with_configuration(conf)
                                    .build())
    source = {**kafka_options(settings, settings.topic("ticks")), "properties.group.id": settings.job_name,
              "properties.auto.offset.reset": "earliest", "scan.startup.mode": "group-offsets",
              "value.format": "json", "value.json.ignore-parse-errors": "true",
              "scan.watermark.idle-timeout": f"{settings.source_idleness_ms} ms"}
    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE ticks (
          symbol STRING, price DOUBLE, event_time BIGINT,
          event_ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp',
          WATERMARK FOR event_ts AS event_ts - {sql_interval(settings.watermark_bound_ms + 1)}
        ) WITH ({sql_options(source)})""")
    sink = {**kafka_options(settings, settings.topic("max_updates")), "value.format": "json",
            "sink.delivery-guarantee": "exactly-once",
            "sink.transactional-id-prefix": f"{settings.job_name}-sql",
            "properties.transaction.timeout.ms": str(settings.kafka_transaction_timeout_ms),
            "properties.linger.ms": str(settings.kafka_linger_ms), "properties.compression.type": "lz4"}
    t_env.execute_sql(f"""CREATE TEMPORARY TABLE maxima (symbol STRING, `window` STRING, event_time BIGINT,
                          `max` DOUBLE, `min` DOUBLE) WITH ({sql_options(sink)})""")
    if args.variant == "over":
        # One sink (one transactional producer) for every window: their OVER queries joined by UNION ALL.
        selects = [f"""
            SELECT symbol, {sql_literal(format_duration(window_us))}, event_time, MAX(price) OVER w, MIN(price) OVER w
            FROM ticks
            WINDOW w AS (PARTITION BY symbol ORDER BY event_ts RANGE BETWEEN {sql_interval(window_us // 1000)}
                         PRECEDING AND CURRENT ROW)""" for window_us in settings.rules().windows_us]
        query = "INSERT INTO maxima " + " UNION ALL ".join(selects)
    else:
        query = """
            INSERT INTO maxima
            SELECT symbol, '1m', MAX(event_time), MAX(price), MIN(price) FROM TABLE(
              HOP(TABLE ticks, DESCRIPTOR(event_ts), INTERVAL '1' SECOND, INTERVAL '1' MINUTE))
            GROUP BY symbol, window_start, window_end"""
    client = t_env.execute_sql(query).get_job_client()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        if client.get_job_status().result().is_globally_terminal_state():
            client.get_job_execution_result().result()  # raises the job's failure
            return
    client.cancel().result()


if __name__ == "__main__":
    main()
