"""A single active retention sweeper: two `serve` processes with retention.sweeper = true on one PostgreSQL warehouse
elect one through the warehouse's lease; the other skips its sweeps until the holder is killed and its lease runs
out, then takes over. `imgpipe retention run` skips while a serve holds the lease."""

import json
import re
import subprocess
import time

from support import run_cli
from test_scripts import fresh_postgres_database

DEADLINE = 60  # seconds to wait for a condition: a bound against hangs, not a performance check


def metric(server, name):
    """The value of an unlabelled metric on /metrics, or 0 when it was never recorded."""
    r = server.get("/metrics")
    assert r.status_code == 200, r.text
    m = re.search(rf"^{name}(?:{{}})? (\S+)$", r.text, re.M)
    return float(m.group(1)) if m else 0.0


def wait_until(what, predicate, servers):
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        assert time.monotonic() < deadline, f"{what} within {DEADLINE}s; logs:\n" + "\n---\n".join(
            s.log_tail(15) for s in servers)
        time.sleep(0.2)


def lease_owner(url, name="retention-sweeper"):
    p = subprocess.run(["psql", url, "-At", "-c", f"SELECT owner FROM leases WHERE name = '{name}'"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def test_one_of_two_servers_sweeps_and_the_other_takes_over_when_it_is_killed(start_server):
    url = fresh_postgres_database("sweeper")
    env = {
        "IMGPIPE_DATABASE_BACKEND": "postgres",
        "IMGPIPE_DATABASE_URL": url,
        "IMGPIPE_RETENTION_SWEEPER": "true",
        "IMGPIPE_RETENTION_SWEEP_INTERVAL": "1s",
        "IMGPIPE_RETENTION_LEASE": "3s",
    }
    first = start_server(env=env)
    wait_until("the first server sweeps", lambda: metric(first, "imgpipe_retention_sweeps_total") >= 1, [first])
    # Rollup compaction runs at start, then every 30 s, in the server holding its own lease.
    wait_until("the first server compacts the rollups",
               lambda: metric(first, "imgpipe_rollup_compactions_total") >= 1, [first])
    second = start_server(env=env, admin_key=first.admin_key)
    servers = [first, second]
    wait_until("the second server reports that another holds the lease",
               lambda: any("another process holds the retention sweeper lease" in line
                           for line in second.stderr_lines), servers)
    # Several of the holder's sweeps later, the other has still not swept once.
    swept = metric(first, "imgpipe_retention_sweeps_total")
    wait_until("the first server sweeps three more times",
               lambda: metric(first, "imgpipe_retention_sweeps_total") >= swept + 3, servers)
    assert metric(second, "imgpipe_retention_sweeps_total") == 0
    assert metric(first, "imgpipe_retention_sweeper_active") == 1
    assert metric(second, "imgpipe_retention_sweeper_active") == 0
    assert lease_owner(url).endswith(f"-{first.proc.pid}")
    # The second server's compaction at its start found the lease held: only one server folds the rollups.
    assert metric(second, "imgpipe_rollup_compactions_total") == 0
    assert lease_owner(url, "rollup-compaction").endswith(f"-{first.proc.pid}")

    # A scheduled run beside them does not sweep either.
    p = run_cli("retention", "run", "--data-dir", first.data_dir,
                env={k: v for k, v in env.items() if k != "IMGPIPE_RETENTION_SWEEPER"})
    assert p.returncode == 0, p.stderr
    assert "skipped" in json.loads(p.stdout), p.stdout

    # The holder dies without releasing the lease: once it ran out, the other takes it and sweeps.
    first.kill()
    wait_until("the second server takes over the lease and sweeps",
               lambda: metric(second, "imgpipe_retention_sweeps_total") >= 1, [second])
    assert metric(second, "imgpipe_retention_sweeper_active") == 1
    assert lease_owner(url).endswith(f"-{second.proc.pid}")

    # A clean stop gives the lease up at once.
    assert second.stop() == 0
    assert lease_owner(url) == ""
