"""A class-data archive for the local mini-cluster's JVM (AppCDS: JDK 17's dynamic archive).

Every local job starts a JVM that loads Flink's and Beam's classes afresh: parsing and verifying them
was 1.0-1.4 s of each job's start-up here, inside the job's own runtime (the tasks load their classes
once they are deployed). The JVM can instead map the classes an earlier run loaded, already parsed and
verified, from an archive file. JDK 17 makes one at exit with -XX:ArchiveClassesAtExit and maps it with
-XX:SharedArchiveFile; JDK 19's -XX:+AutoCreateSharedArchive would do both, but the machine has 17.

The first local job whose JVM this process starts makes the archive: when the process exits, the JVM is
asked to exit too, writes the archive (~7 s, once), and it is renamed into place. Later jobs map it. Its
name holds a digest of what it depends on (the java binary, the JDK's own base archive, the jars on the
JVM's class path), so an upgraded JDK or pyflink gets a new one instead of a mismatch; a JVM that cannot
use an archive runs without it. Which classes it holds is up to the first job: delete the directory to
have the next local job make it again.
"""

from __future__ import annotations

import atexit
import glob
import hashlib
import os
import shutil
import time
from pathlib import Path


def _java() -> Path | None:
    """The java that PyFlink starts (its own lookup: the Flink config's java home, JAVA_HOME, else PATH)."""
    from pyflink.pyflink_gateway_server import find_java_executable

    found = shutil.which(find_java_executable())
    return Path(found).resolve() if found else None


def _class_path_jars() -> list[str]:
    """The jars on the local JVM's class path, as PyFlink puts them there."""
    from pyflink.pyflink_gateway_server import construct_flink_classpath, prepare_environment_variables

    env = dict(os.environ)
    prepare_environment_variables(env)
    return sorted(jar for jar in construct_flink_classpath(env).split(os.pathsep) if jar.endswith(".jar"))


def archive_path(directory: Path) -> Path | None:
    """Where the archive for this JDK and these jars lives; None without a java. (The JVM options are not
    part of it: another heap size or collector can map the same archive, and the JVM checks that.)"""
    java = _java()
    if java is None:
        return None
    jdk = java.parent.parent
    identity = [str(java)]
    for path in [jdk / "lib" / "modules", jdk / "lib" / "server" / "classes.jsa", *map(Path, _class_path_jars())]:
        if path.exists():
            stat = path.stat()
            identity.append(f"{path}:{stat.st_size}:{stat.st_mtime_ns}")
    digest = hashlib.sha256("\n".join(identity).encode()).hexdigest()[:16]
    return directory / f"flink-classes-{digest}.jsa"


def options(directory: Path) -> str:
    """JVM options to map the archive, or to make it at exit (and rename it into place then). Call only
    when this process is about to start its JVM."""
    archive = archive_path(directory)
    if archive is None or not os.path.exists(f"/proc/self/task/{os.getpid()}/children"):
        return ""  # _finish finds the JVM through Linux's /proc: elsewhere it could not wait for the JVM's write
    # The JVM's own messages about the archive (classes it skips while writing one) are not the user's.
    quiet = "-Xlog:cds=off -Xlog:cds+dynamic=off"
    if archive.exists():
        return f"-XX:SharedArchiveFile={archive} {quiet}"
    archive.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(archive.parent)
    partial = archive.with_name(f"{archive.name}.{os.getpid()}.partial")
    atexit.register(_finish, partial, archive)
    return f"-XX:ArchiveClassesAtExit={partial} {quiet}"


def _remove_abandoned(directory: Path) -> None:
    """Partial archives of processes that are gone (killed before their JVM finished writing)."""
    for partial in directory.glob("*.partial"):
        pid = partial.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not _alive(int(pid)):
            partial.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _finish(partial: Path, archive: Path) -> None:
    """At this process's exit: the JVM writes the archive only when it exits, which it otherwise does after
    this process (its stdin closes then). Make it exit now, wait for it, and move the archive into place
    whole, so that no later JVM maps a half-written one."""
    javas = _java_children()
    try:
        from pyflink.java_gateway import get_gateway

        get_gateway().jvm.java.lang.System.exit(0)
    except Exception:  # the JVM ends the call by exiting (or is gone already)
        pass
    deadline = time.monotonic() + 120
    while javas and time.monotonic() < deadline:
        javas = [pid for pid in javas if _running(pid)]
        time.sleep(0.05)
    if not javas and partial.exists() and partial.stat().st_size > 0:
        partial.replace(archive)
        for stale in archive.parent.glob("flink-classes-*.jsa"):  # of an earlier JDK or pyflink (~150 MB each)
            if stale != archive:
                stale.unlink(missing_ok=True)
    else:
        partial.unlink(missing_ok=True)


def _running(child: int) -> bool:
    try:
        return os.waitpid(child, os.WNOHANG) == (0, 0)
    except ChildProcessError:  # reaped already
        return False


def _java_children() -> list[int]:
    """This process's child java processes (Linux /proc; PyFlink keeps no handle on the one it starts)."""
    pids = set()
    for children in glob.glob("/proc/self/task/*/children"):
        try:
            with open(children) as listing:
                pids.update(int(pid) for pid in listing.read().split())
        except OSError:  # that thread has ended
            pass
    javas = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/comm") as comm:
                if comm.read().strip() == "java":
                    javas.append(pid)
        except OSError:
            pass
    return javas
