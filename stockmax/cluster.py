"""A Flink cluster: submit the job (`flink run -py`), cancel it, take a savepoint (Flink's REST API).

`flink run` runs jobs/pipeline.py's main on this machine, which builds the job graph with this machine's
stockmax settings, and ships it with the Kafka connector jar and stockmax's sources (only the sources, a
staged copy: not the venv). The cluster's Python needs stockmax's dependencies (the docker-compose image
installs them); `STOCKMAX_CLUSTER_PYTHON` names that interpreter.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import kafka_io
from .config import KAFKA_CONNECTOR_JAR, PROJECT_ROOT, Settings

SOURCES = ("stockmax", "operators", "jobs", "schemas", "sql")


class ClusterError(RuntimeError):
    pass


def flink_command() -> Path:
    """The `flink` client script of the apache-flink wheel in this environment."""
    import pyflink

    return Path(pyflink.__file__).parent / "bin" / "flink"


def staged_sources(settings: Settings) -> tuple[Path, Path]:
    """A copy of stockmax's sources (no venv, no caches) for `flink run -pyfs`, refreshed each time, and the
    job's file in it: from a checkout its top folders, from an installed wheel the package (which holds
    them as subpackages)."""
    stage = settings.data_dir / "submit" / "stockmax-src"
    if stage.exists():
        shutil.rmtree(stage)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    if (PROJECT_ROOT / "pyproject.toml").is_file():
        for name in SOURCES:
            shutil.copytree(PROJECT_ROOT / name, stage / name, ignore=ignore)
        return stage, stage / "jobs" / "pipeline.py"
    shutil.copytree(Path(__file__).resolve().parent, stage / "stockmax", ignore=ignore)
    return stage, stage / "stockmax" / "jobs" / "pipeline.py"


def _rest(settings: Settings, method: str, path: str, body: dict | None = None) -> dict:
    url = f"http://{settings.flink_rest_address}{path}"
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        try:
            detail = "; ".join(json.loads(detail).get("errors", [detail]))
        except ValueError:
            pass
        raise ClusterError(f"Flink at {settings.flink_rest_address} answered {exc.code} to {method} {path}: "
                           f"{detail.splitlines()[0][:300] if detail else exc.reason}") from None
    except OSError as exc:
        raise ClusterError(f"no Flink cluster answers at {settings.flink_rest_address} ({exc}); set "
                           f"STOCKMAX_FLINK_REST_ADDRESS to its JobManager's REST address (host:port)") from None
    return json.loads(text) if text else {}


def job_status(settings: Settings, job_id: str) -> str:
    return _rest(settings, "GET", f"/jobs/{job_id}")["state"]


def submit(settings: Settings, bounded: bool = False) -> str:
    """Submit jobs/pipeline.py to the cluster, detached; returns the job id."""
    _rest(settings, "GET", "/overview")  # a clear error now when no cluster answers
    kafka_io.require_topics(settings)  # and when a topic is missing (the job would fail at its first write)
    connector = settings.flink_jar(KAFKA_CONNECTOR_JAR)
    stage, job_file = staged_sources(settings)
    command = [str(flink_command()), "run", "--detached", "--jobmanager", settings.flink_rest_address,
               "--python", str(job_file), "--pyFiles", str(stage),
               "--pyExecutable", settings.cluster_python, "--pyClientExecutable", sys.executable,
               "--jarfile", str(connector)]
    if bounded:
        command.append("--bounded")
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    found = re.search(r"JobID ([0-9a-f]{32})", done.stdout + done.stderr)
    if done.returncode != 0 or not found:
        lines = (done.stdout + done.stderr).strip().splitlines()
        # The Python side's traceback says more than the Java stack around it.
        start = next((i for i, line in enumerate(lines) if line.startswith("Traceback")), max(0, len(lines) - 15))
        tail = settings.scrub("\n".join(lines[start:start + 30]))
        raise ClusterError(f"flink run failed (exit {done.returncode}):\n{tail}")
    return found.group(1)


def cancel(settings: Settings, job_id: str, timeout_s: float = 60.0) -> str:
    _rest(settings, "PATCH", f"/jobs/{job_id}?mode=cancel")
    deadline = time.monotonic() + timeout_s
    while (state := job_status(settings, job_id)) not in ("CANCELED", "FINISHED", "FAILED"):
        if time.monotonic() > deadline:
            raise ClusterError(f"job {job_id} is still {state} {timeout_s:.0f}s after the cancel request")
        time.sleep(0.5)
    return state


def savepoint(settings: Settings, job_id: str, directory: str | None = None, stop: bool = False,
              timeout_s: float = 300.0) -> str:
    """Trigger a savepoint (and stop the job with it when `stop`); returns its location."""
    if stop:
        trigger = _rest(settings, "POST", f"/jobs/{job_id}/stop", {"targetDirectory": directory, "drain": False})
    else:
        trigger = _rest(settings, "POST", f"/jobs/{job_id}/savepoints",
                        {"target-directory": directory, "cancel-job": False})
    request_id = trigger["request-id"]
    deadline = time.monotonic() + timeout_s
    while True:
        status = _rest(settings, "GET", f"/jobs/{job_id}/savepoints/{request_id}")
        if status["status"]["id"] == "COMPLETED":
            operation = status.get("operation", {})
            if "failure-cause" in operation:
                cause = operation["failure-cause"].get("stack-trace", "").splitlines()
                raise ClusterError(f"the savepoint of job {job_id} failed: {cause[0] if cause else operation}")
            return operation["location"]
        if time.monotonic() > deadline:
            raise ClusterError(f"the savepoint of job {job_id} did not complete within {timeout_s:.0f}s")
        time.sleep(0.5)
