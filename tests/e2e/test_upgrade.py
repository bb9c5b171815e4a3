"""Upgrades: `imgpipe migrate` applies the schema migrations and reports the versions; a database whose schema is
newer than the binary is refused, by `serve` and by `migrate`, with both versions named (SQLite and PostgreSQL)."""

import json
import subprocess

import pytest

from support import IMGPIPE_BIN, child_env, run_cli
from test_scripts import fresh_postgres_database


def backend_env(backend, tmp_path):
    if backend == "sqlite":
        # The test stamps the schema with the sqlite3 shell, which cannot open an encrypted warehouse; what it checks
        # (migration versions) does not depend on the encryption, which test_encryption.py covers.
        return {"IMGPIPE_DATABASE_ENCRYPT": "false"}
    return {"IMGPIPE_DATABASE_BACKEND": "postgres", "IMGPIPE_DATABASE_URL": fresh_postgres_database("upgrade")}


def stamp_future_version(backend, env, data_dir):
    sql = "INSERT INTO schema_migrations VALUES (999, 'from the future', '2030-01-01T00:00:00.000Z')"
    if backend == "sqlite":
        cmd = ["sqlite3", str(data_dir / "imgpipe.db"), sql]
    else:
        cmd = ["psql", env["IMGPIPE_DATABASE_URL"], "-v", "ON_ERROR_STOP=1", "-c", sql]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migrate_applies_reports_and_refuses_a_newer_schema(backend, tmp_path):
    env = backend_env(backend, tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    p = run_cli("migrate", "--check", "--data-dir", data, env=env)
    assert p.returncode == 0, p.stderr
    check = json.loads(p.stdout)
    known = check["binary_knows"]
    assert check == {"backend": backend, "schema_version": 0, "binary_knows": known, "pending": known}

    p = run_cli("migrate", "--data-dir", data, env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"backend": backend, "schema_version": known, "applied": known}
    p = run_cli("migrate", "--data-dir", data, env=env)
    assert json.loads(p.stdout)["applied"] == 0, "migrating twice applies nothing"
    assert json.loads(run_cli("migrate", "--check", "--data-dir", data, env=env).stdout)["pending"] == 0

    # The database was migrated by a newer imgpipe: this one touches nothing and says which versions differ.
    stamp_future_version(backend, env, data)
    for args in (["migrate", "--check"], ["migrate"]):
        p = run_cli(*args, "--data-dir", data, env=env)
        assert p.returncode == 1
        assert f"schema version 999 but this imgpipe knows only up to {known}" in p.stderr.decode(), p.stderr
    serve = subprocess.run([str(IMGPIPE_BIN), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data)],
                           env=child_env(env), capture_output=True, text=True, timeout=60)
    assert serve.returncode == 1
    assert f"schema version 999 but this imgpipe knows only up to {known}" in serve.stderr, serve.stderr[-2000:]
