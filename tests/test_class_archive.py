"""The local JVM's class-data archive (stockmax/class_archive.py): made by the first process, renamed into
place whole, and mapped by the next JVM, whose Flink classes then come from it (the JVM's own class-load
log is the oracle)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from stockmax import class_archive

START_JVM = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from stockmax import class_archive
    os.environ["JVM_ARGS"] = "-Xmx256m " + class_archive.options(Path(sys.argv[1])) + " " + sys.argv[2]
    from pyflink.datastream import StreamExecutionEnvironment
    StreamExecutionEnvironment.get_execution_environment()  # starts the JVM, loads Flink's classes
""")


def _start_jvm(archive_dir: Path, extra_options: str = "") -> None:
    subprocess.run([sys.executable, "-c", START_JVM, str(archive_dir), extra_options], check=True, timeout=180,
                   cwd=archive_dir, stdout=subprocess.DEVNULL)


def test_first_process_makes_the_archive_and_the_next_jvm_maps_it(tmp_path):
    stale = tmp_path / "flink-classes-0123456789abcdef.jsa"  # an earlier JDK's or pyflink's
    stale.write_bytes(b"x")
    _start_jvm(tmp_path)
    archive = class_archive.archive_path(tmp_path)
    assert archive.exists() and archive.stat().st_size > 1_000_000
    assert not list(tmp_path.glob("*.partial")) and not stale.exists()

    class_log = tmp_path / "classes.log"
    _start_jvm(tmp_path, f"-Xlog:class+load=info:file={class_log}")
    flink_classes = [line for line in class_log.read_text().splitlines() if " org.apache.flink." in line]
    from_archive = [line for line in flink_classes if "shared objects file (top)" in line]
    # Most of the Flink classes the gateway loads come from the archive the first process wrote.
    assert flink_classes and len(from_archive) > len(flink_classes) / 2


def test_archive_name_follows_the_class_path(tmp_path, monkeypatch):
    jar = tmp_path / "flink-dist.jar"
    jar.write_bytes(b"one")
    monkeypatch.setattr(class_archive, "_class_path_jars", lambda: [str(jar)])
    before = class_archive.archive_path(tmp_path)
    assert class_archive.archive_path(tmp_path) == before
    jar.write_bytes(b"other")  # an upgraded jar: another archive, not a mismatched one
    assert class_archive.archive_path(tmp_path) != before


def test_partial_archives_of_gone_processes_are_removed(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    abandoned = tmp_path / f"flink-classes-0.jsa.{gone}.partial"
    mine = tmp_path / f"flink-classes-0.jsa.{os.getpid()}.partial"
    abandoned.write_bytes(b"x")
    mine.write_bytes(b"x")
    class_archive._remove_abandoned(tmp_path)
    assert not abandoned.exists() and mine.exists()
