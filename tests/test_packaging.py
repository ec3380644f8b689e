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
        import stockmax.serve
        assert (stockmax.serve.STATIC_DIR / "lightweight-charts.standalone.production.js").is_file()
    """)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == str((tmp_path / "site" / "stockmax").resolve())


def test_the_compose_file_follows_the_compose_spec_and_its_image_gets_what_stockmax_needs():
    """No Docker engine here to build it, so: docker-compose.yml against the Compose Specification's JSON
    Schema (tests/compose-spec.json: compose-spec/compose-spec@170098ba, schema/compose-spec.json,
    Apache-2.0); its image's Python is a version pyproject.toml allows (the Flink image's own python3 is
    3.10), is first on the PATH (the cluster runs `python3`), and everything it copies exists after
    `make setup`, the job's Java parts included, where the settings look for them."""
    import json
    import re
    import tomllib
    from pathlib import Path

    import jsonschema
    import yaml
    from packaging.specifiers import SpecifierSet

    root = config.PROJECT_ROOT
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())
    schema = json.loads((Path(__file__).parent / "compose-spec.json").read_text())
    jsonschema.validate(compose, schema, cls=jsonschema.Draft7Validator)

    dockerfile = compose["x-flink-image"]["build"]["dockerfile_inline"].replace("\\\n", " ")
    requires = SpecifierSet(tomllib.loads((root / "pyproject.toml").read_text())["project"]["requires-python"])
    versions = set(re.findall(r"apt-get install [^\n]*?\bpython(3\.\d+)\b", dockerfile))
    assert len(versions) == 1, f"the image should install one Python by its version (python3.N), not {versions or 'python3'}"
    (installed,) = versions
    assert installed in requires, f"the image installs Python {installed}; pyproject.toml requires {requires}"
    venv = re.search(rf"python{re.escape(installed)} -m venv (\S+)", dockerfile).group(1)
    assert re.search(rf"^ENV PATH={re.escape(venv)}/bin:\$PATH$", dockerfile, re.M), "the venv is not first on the PATH"
    steps = re.findall(r"^(RUN|COPY|ENV|FROM) (.*)$", dockerfile, re.M)
    assert [i for i, (op, _) in enumerate(steps) if op == "ENV"][0] < \
        [i for i, (op, args) in enumerate(steps) if op == "RUN" and "pip install" in args][0]
    jars_dir = None
    for op, args in steps:
        if op == "COPY":
            *sources, target = args.split()
            for source in sources:
                assert list(root.glob(source)), f"the image copies {source}, which is not there (make setup makes the jars)"
            if any(".jar" in source for source in sources):
                jars_dir = target.rstrip("/")
                assert {Path(s).name for s in sources} >= {config.FUNCTIONS_JAR}
    env = compose["x-stockmax-env"]
    assert env["STOCKMAX_FLINK_JARS_DIR"] == jars_dir
    assert env["STOCKMAX_CLUSTER_PYTHON"] == "python3"
    for service in compose["services"].values():  # every file it mounts is in the repository
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert not source.startswith(".") or (root / source).exists(), source
    # Prometheus scrapes the port the cluster's reporter listens on.
    flink_conf = yaml.safe_load((root / "flink-conf" / "config.yaml").read_text())
    from stockmax.flink_env import PROMETHEUS_REPORTER_FACTORY

    assert flink_conf["metrics"]["reporter"]["prom"]["factory"]["class"] == PROMETHEUS_REPORTER_FACTORY  # as locally
    port = flink_conf["metrics"]["reporter"]["prom"]["port"]
    prometheus = yaml.safe_load((root / "monitoring" / "prometheus.yml").read_text())
    serve_port = compose["services"]["serve"]["entrypoint"][-1]  # stockmax serve's own /metrics
    assert compose["services"]["serve"]["ports"] == [f"{serve_port}:{serve_port}"]
    assert {t for c in prometheus["scrape_configs"] for s in c["static_configs"] for t in s["targets"]} == \
        {f"jobmanager:{port}", f"taskmanager:{port}", f"serve:{serve_port}"}
    for name in env:  # every STOCKMAX_ variable is a setting stockmax reads
        if name.startswith("STOCKMAX_"):
            assert name.removeprefix("STOCKMAX_").lower() in config.Settings.__dataclass_fields__, name
