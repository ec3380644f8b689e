"""A built wheel is stockmax whole: its code, and the schemas and SQL it reads, found inside the package."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile

from stockmax import config


def test_a_built_wheel_carries_and_finds_its_schemas_and_sql(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                            "--wheel-dir", str(tmp_path / "dist"), str(config.PROJECT_ROOT)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("stockmax-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("schemas", "sql/migrations", "sql/queries"):
        files = sorted(p.relative_to(config.PROJECT_ROOT).as_posix() for p in (config.PROJECT_ROOT / folder).iterdir()
                       if p.is_file())
        assert files and all(f"stockmax/{name}" in names for name in files), (folder, sorted(names))
    assert {"stockmax/jobs/pipeline.py", "stockmax/operators/wire.py", "stockmax/loopback_boot.py"} <= names

    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                                str(tmp_path / "site"), str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-3000:]
    # Run from elsewhere, with the installed copy first on the path: everything it reads is its own.
    code = textwrap.dedent("""
        import stockmax, stockmax.store, stockmax.loader, stockmax.operators.tick as tick
        from pathlib import Path
        site = Path(stockmax.__file__).parent
        print(site)
        assert stockmax.store.SQL_DIR == site / "sql", stockmax.store.SQL_DIR
        assert (stockmax.store.SQL_DIR / "migrations" / "001_rollups.sql").is_file()
        assert tick.SCHEMA_PATH.resolve() == site / "schemas" / "tick.schema.json", tick.SCHEMA_PATH
        assert stockmax.loader._record_schema("rollup").names[0] == "symbol"
    """)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == str((tmp_path / "site" / "stockmax").resolve())
