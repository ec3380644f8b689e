"""The environment under which the `stockmax` command sees exactly a test's settings."""

from __future__ import annotations

import os

from stockmax import config


def cli_env(settings: config.Settings) -> dict[str, str]:
    # PYFLINK_*: a job run inside the pytest process (the demo test) leaves PYFLINK_GATEWAY_DISABLED set,
    # which would stop a child's PyFlink from starting its JVM.
    env = {k: v for k, v in os.environ.items() if not k.startswith((config.ENV_PREFIX, "PYFLINK_"))}
    return {**env, **config.environment(settings)}
