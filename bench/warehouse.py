"""Warehouse benchmark: the dashboard's queries and the analysis views on 1M synthetic image rows, and the metadata
insert rate, on SQLite and on PostgreSQL. Writes warehouse.json into the scratch folder (bench/report.py reads it).

    python3 bench/warehouse.py [--rows 1000000] [--reps 20] [--insert-rows 20000]
                               [--backends sqlite,sqlcipher,postgres]

Queries and inserts go through bench/warehouse_bench (the real MetadataStore: Query, the path of POST /v1/query,
and InsertImage); build it with -DIMGPIPE_BUILD_BENCH=ON, or set BENCH_WAREHOUSE_BIN. The 1M rows themselves are
generated with bulk SQL inside each database (INSERT ... SELECT over a series), not through InsertImage, which
would take hours; the generator is deterministic, so every backend holds the same rows. `sqlcipher` is the SQLite
backend encrypted as imgpipe encrypts it by default (database.encrypt, a random raw key per run): comparing it with
`sqlite` in the same run is the encryption's cost on the warehouse. The SQLite generator runs through warehouse_bench
(`exec`), the one SQLite library imgpipe links (SQLCipher), since Python's sqlite3 cannot open an encrypted file. PostgreSQL is started by
scripts/services/postgres in a scratch IMGPIPE_SERVICES_DIR and stopped afterwards. Never part of the test command.
"""

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import benchlib as bl

DAY = 86400
WINDOW_DAYS = 30
P = 1000003  # prime above the row count: n * A mod P walks the rows in a scrambled but uniform order


def u(k):
    """A uniform number in [0, 1) for row n, one independent-looking stream per k."""
    a = [7919, 104729, 15485863, 32452843, 49979687, 67867967, 86028121, 122949829, 160481219, 179424673][k]
    return f"(((n * {a} + {k * 7777 + 11}) % {P}) / {float(P)})"


def gen_select(dialect, t0, series):
    """SELECT of the generator's facts per row n (the same values on both backends)."""

    def trunc(x):  # CAST truncates in SQLite but rounds in PostgreSQL
        return f"CAST({x} AS INTEGER)" if dialect == "sqlite" else f"trunc({x})::bigint"
    return f"""SELECT n,
  {t0} - {trunc(f"{u(0)} * {WINDOW_DAYS * DAY}")} AS t,
  CASE WHEN {u(1)} < 0.65 THEN 'upload' WHEN {u(1)} < 0.85 THEN 'stream-a' WHEN {u(1)} < 0.95 THEN 'stream-b'
       ELSE 'stream-c' END AS source,
  CASE WHEN {u(2)} < 0.70 THEN 'jpeg' WHEN {u(2)} < 0.84 THEN 'png' WHEN {u(2)} < 0.92 THEN 'webp'
       WHEN {u(2)} < 0.97 THEN 'heic' WHEN {u(2)} < 0.99 THEN 'gif' ELSE 'tiff' END AS format,
  20000 + {trunc(f"{u(3)} * {u(4)} * {u(5)} * 12000000")} AS bytes,
  {trunc(f"{u(6)} * 7")} AS res,
  {u(7)} AS fail,
  {trunc(f"50 + {u(8)} * {u(8)} * 3000")} AS latency_ms,
  CASE WHEN {u(9)} < 0.8 THEN 'default' ELSE 'v2' END AS pipeline
FROM {series}"""


WIDTHS = "CASE res WHEN 0 THEN 640 WHEN 1 THEN 1280 WHEN 2 THEN 1920 WHEN 3 THEN 3024 WHEN 4 THEN 4000 " \
         "WHEN 5 THEN 6000 ELSE 8192 END"
HEIGHTS = "CASE res WHEN 0 THEN 480 WHEN 1 THEN 960 WHEN 2 THEN 1080 WHEN 3 THEN 4032 WHEN 4 THEN 3000 " \
          "WHEN 5 THEN 4000 ELSE 5464 END"
ERRORS = "CASE n % 4 WHEN 0 THEN 'decode: truncated JPEG' WHEN 1 THEN 'limits: image too large' " \
         "WHEN 2 THEN 'timeout after 60 s' ELSE 'encode: out of memory' END"


def generate_sql(dialect, n_rows, t0):
    """Statements that fill images, processing_runs, renditions and jobs with n_rows synthetic images received over
    the 30 days before t0 (epoch seconds). About 3% fail (after two retries); rows older than 7 days are expired;
    the last 2 minutes are still queued."""
    if dialect == "sqlite":
        series = f"(WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {n_rows}) SELECT n FROM s)"

        def ts(epoch):
            return f"strftime('%Y-%m-%dT%H:%M:%fZ', {epoch}, 'unixepoch')"
        stmts = [f"CREATE TEMP TABLE gen AS {gen_select(dialect, t0, series)}"]
    else:
        series = f"generate_series(1::bigint, {n_rows}) AS s(n)"

        def ts(epoch):
            return f"to_timestamp({epoch})"
        first_day = (t0 - WINDOW_DAYS * DAY) // DAY
        stmts = [
            # The day partitions the store would have created (same names as CreateDayPartition).
            f"""DO $$ BEGIN FOR d IN {first_day}..{t0 // DAY + 1} LOOP
  EXECUTE format('CREATE TABLE IF NOT EXISTS images_p%s PARTITION OF images FOR VALUES FROM (%L) TO (%L)',
    to_char(to_timestamp(d * 86400) AT TIME ZONE 'UTC', 'YYYYMMDD'), to_timestamp(d * 86400),
    to_timestamp((d + 1) * 86400));
END LOOP; END $$""",
            f"CREATE TEMP TABLE gen AS {gen_select(dialect, t0, series)}",
            f"INSERT INTO image_ids (id, received_at) SELECT lpad(t::text, 13, '0') || lpad(n::text, 13, '0'), "
            f"{ts('t')} FROM gen",
        ]
    image_id = ("printf('%013d%013d', t, n)" if dialect == "sqlite"
                else "lpad(t::text, 13, '0') || lpad(n::text, 13, '0')")
    sha = "printf('%064d', n)" if dialect == "sqlite" else "lpad(n::text, 64, '0')"
    age_expired = f"t < {t0 - 7 * DAY}"
    queued = f"t >= {t0 - 120}"
    failed = "fail < 0.03"
    has_alpha = "format IN ('png', 'webp', 'gif')" if dialect == "postgres" else \
        "CASE WHEN format IN ('png', 'webp', 'gif') THEN 1 ELSE 0 END"
    stmts.append(f"""INSERT INTO images (id, sha256, source, source_ref, uploader_key_id, received_at, bytes, format,
  content_type, width, height, has_alpha, colour_space, exif_make, exif_model, pipeline, original_key, status,
  processed_at, expires_at, expired_at, error)
SELECT {image_id}, {sha}, source, '',
  CASE WHEN source = 'upload' THEN 'k_' || CAST(n % 50 AS TEXT) ELSE '' END, {ts('t')}, bytes, format,
  'image/' || format, {WIDTHS}, {HEIGHTS}, {has_alpha}, 'srgb',
  CASE n % 3 WHEN 0 THEN 'Canon' WHEN 1 THEN 'Apple' END, CASE n % 3 WHEN 0 THEN 'EOS R5' WHEN 1 THEN 'iPhone 15' END,
  pipeline, 'originals/' || {image_id},
  CASE WHEN {age_expired} THEN 'expired' WHEN {queued} THEN 'queued' WHEN {failed} THEN 'failed' ELSE 'processed' END,
  CASE WHEN {queued} OR {failed} THEN NULL ELSE {ts('t + latency_ms / 1000')} END,
  {ts(f't + {7 * DAY}')}, CASE WHEN {age_expired} THEN {ts(f't + {7 * DAY} + 600')} END,
  CASE WHEN {failed} AND NOT ({queued}) THEN {ERRORS} END
FROM gen""")
    total = "latency_ms / 1000.0"
    stmts.append(f"""INSERT INTO processing_runs (image_id, pipeline, attempt, started_at, finished_at, status, error,
  decode_seconds, encode_seconds, total_seconds)
SELECT {image_id}, pipeline, 1, {ts('t')}, {ts('t + latency_ms / 1000')}, 'processed', NULL,
  {total} * 0.4, {total} * 0.5, {total}
FROM gen WHERE NOT ({queued}) AND NOT ({failed})
UNION ALL
SELECT {image_id}, pipeline, a.attempt, {ts('t + a.attempt * 30')}, {ts('t + a.attempt * 30 + 1')},
  CASE WHEN a.attempt = 3 THEN 'failed' ELSE 'retrying' END, {ERRORS}, 0.2, 0, 1
FROM gen, (SELECT 1 AS attempt UNION ALL SELECT 2 UNION ALL SELECT 3) AS a WHERE NOT ({queued}) AND {failed}""")
    stmts.append(f"""INSERT INTO renditions (image_id, name, key, format, content_type, width, height, bytes,
  created_at)
SELECT {image_id}, r.name, 'renditions/' || {image_id} || '/' || r.name, 'jpeg', 'image/jpeg', r.side, r.side,
  r.bytes + n % 1000, {ts('t + latency_ms / 1000')}
FROM gen, (SELECT 'thumb-256' AS name, 256 AS side, 15000 AS bytes
           UNION ALL SELECT 'large-1024', 1024, 150000) AS r
WHERE NOT ({queued}) AND NOT ({failed})""")
    stmts.append(f"""INSERT INTO jobs (image_id, pipeline, not_before, enqueued_at)
SELECT {image_id}, pipeline, {ts('t')}, {ts('t')} FROM gen WHERE {queued}""")
    stmts.append("DROP TABLE gen")
    return stmts


def overview_statements(dialect, out_dir):
    """The overview's statements from web/src/queries.ts itself (transpiled by the dashboard's esbuild, run by node),
    so the benchmark times exactly what the dashboard sends."""
    esbuild = bl.REPO / "web" / "node_modules" / ".bin" / "esbuild"
    if not esbuild.is_file():
        bl.die("no web/node_modules: build once with scripts/build (it runs npm ci for the dashboard)")
    module = out_dir / "queries.mjs"
    subprocess.run([str(esbuild), str(bl.REPO / "web" / "src" / "queries.ts"), "--format=esm", "--platform=node",
                    f"--outfile={module}", "--log-level=warning"], check=True)
    script = f"""import * as q from {json.dumps(module.as_uri())};
const d = process.argv[1];
const out = {{ summary: q.summarySql(d), latency_total: q.latencyTotalSql(d), failures: q.failuresSql(d),
  stored: q.storedSql(d), expirations: q.expirationsSql(d) }};
for (const b of ['hour', 'day']) {{
  out[`ingest_${{b}}`] = q.ingestSql(d, b);
  out[`outcome_${{b}}`] = q.outcomeSql(d, b);
  out[`latency_${{b}}`] = q.latencySql(d, b);
}}
console.log(JSON.stringify(out));"""
    proc = subprocess.run(["node", "--input-type=module", "-e", script, dialect], check=True, capture_output=True,
                          text=True)
    return json.loads(proc.stdout)


def dashboard_queries(dialect, now_epoch, out_dir):
    """The overview's statements for the 24 h (hourly buckets) and 30 d (daily buckets) ranges of its picker, with
    the parameters it binds, then every analysis view."""
    sql = overview_statements(dialect, out_dir)
    out = []

    def rfc(epoch):
        return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(epoch))

    for label, hours, unit in (("24h", 24, "hour"), ("30d", 24 * 30, "day")):
        to = now_epoch + 60
        frm = (to - hours * 3600) // 3600 * 3600
        params = [json.dumps(rfc(frm)), json.dumps(rfc(to))]
        for name in ("summary", "ingest", "outcome", "latency", "latency_total", "failures"):
            key = f"{name}_{unit}" if f"{name}_{unit}" in sql else name
            out.append({"name": f"overview {name} ({label})", "sql": sql[key], "params": params})
    out.append({"name": "overview stored", "params": [], "sql": sql["stored"]})
    out.append({"name": "overview expirations", "params": [json.dumps(rfc(now_epoch))], "sql": sql["expirations"]})
    for view in ("daily_ingest", "hourly_ingest", "format_mix", "processing_latency", "size_histogram",
                 "resolution_histogram", "failures_by_error", "stored_bytes", "upcoming_expirations",
                 "blob_state_counts"):
        out.append({"name": f"view {view}", "sql": f"SELECT * FROM {view}", "params": []})
    return out


def percentile(values, p):
    """Nearest rank, as the warehouse's views."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def run_bench(binary, backend, target, args, out_dir, t0):
    """Queries and inserts on one backend whose database already holds the generated rows."""
    queries_file = out_dir / f"queries-{backend}.json"
    dialect = "postgres" if backend == "postgres" else "sqlite"
    queries_file.write_text(json.dumps(dashboard_queries(dialect, t0, out_dir)))
    subprocess.run([str(binary), backend, target, "compact"], check=True)
    bl.log(f"{backend}: {len(json.loads(queries_file.read_text()))} queries x {args.reps}")
    proc = subprocess.run([str(binary), backend, target, "query", str(queries_file), str(args.reps)],
                          check=True, capture_output=True, text=True)
    times = json.loads(proc.stdout)
    queries = {name: {"p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95), "max_ms": max(ms),
                      "reps": len(ms), "met": percentile(ms, 95) < 200} for name, ms in times.items()}
    inserts = {}
    for writers in (1, 8):
        bl.log(f"{backend}: inserting {args.insert_rows} rows with {writers} writer(s)")
        proc = subprocess.run([str(binary), backend, target, "insert", str(args.insert_rows), str(writers)],
                              check=True, capture_output=True, text=True)
        inserts[str(writers)] = json.loads(proc.stdout)
    return {"queries": queries, "inserts": inserts}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--insert-rows", type=int, default=20_000)
    ap.add_argument("--backends", default="sqlite,sqlcipher,postgres")
    args = ap.parse_args()
    if args.rows >= P:
        bl.die(f"--rows must stay below {P}")
    default_binary = bl.REPO / "build" / "bench-tools" / "bench" / "warehouse_bench"
    binary = Path(os.environ.get("BENCH_WAREHOUSE_BIN", default_binary))
    if not binary.is_file():
        bl.die(f"no warehouse_bench at {binary}; build it (cmake -B build/bench-tools -G Ninja "
               "-DCMAKE_BUILD_TYPE=Release -DIMGPIPE_BUILD_BENCH=ON && ninja -C build/bench-tools warehouse_bench) "
               "or set BENCH_WAREHOUSE_BIN")
    out_dir = bl.scratch_dir("warehouse")
    t0 = int(time.time())
    result = {"rows": args.rows, "reps": args.reps, "insert_rows": args.insert_rows, "target_p95_ms": 200,
              "backends": {}}

    backends = args.backends.split(",")
    os.environ["WAREHOUSE_BENCH_KEY"] = "x'" + os.urandom(32).hex() + "'"
    for backend in ("sqlite", "sqlcipher"):
        if backend not in backends:
            continue
        db = out_dir / backend / "imgpipe.db"
        db.parent.mkdir()
        subprocess.run([str(binary), backend, str(db), "migrate"], check=True)
        bl.log(f"{backend}: generating {args.rows} images with bulk SQL")
        started = time.monotonic()
        script = out_dir / f"{backend}-generate.sql"
        script.write_text(";\n".join(generate_sql("sqlite", args.rows, t0)) + ";\n")
        subprocess.run([str(binary), backend, str(db), "exec", str(script)], check=True)
        generate_seconds = time.monotonic() - started
        result["backends"][backend] = run_bench(binary, backend, str(db), args, out_dir, t0)
        result["backends"][backend]["generate_seconds"] = generate_seconds
        result["backends"][backend]["database_bytes"] = db.stat().st_size

    if "postgres" in backends:
        services = out_dir / "services"
        services.mkdir()
        env = dict(os.environ, IMGPIPE_SERVICES_DIR=str(services))
        script = bl.REPO / "scripts" / "services" / "postgres"
        subprocess.run([str(script), "start"], check=True, env=env)
        try:
            url = (services / "postgres.env").read_text().strip().split("=", 1)[1]
            subprocess.run([str(binary), "postgres", url, "migrate"], check=True)
            bl.log(f"postgres: generating {args.rows} images with bulk SQL")
            started = time.monotonic()
            statements = ["SET client_min_messages = warning"] + generate_sql("postgres", args.rows, t0) + ["ANALYZE"]
            sql = ";\n".join(statements) + ";\n"
            subprocess.run(["psql", "-q", "-X", "-v", "ON_ERROR_STOP=1", url], input=sql, text=True, check=True)
            generate_seconds = time.monotonic() - started
            result["backends"]["postgres"] = run_bench(binary, "postgres", url, args, out_dir, t0)
            result["backends"]["postgres"]["generate_seconds"] = generate_seconds
            size = subprocess.run(["psql", "-X", "-At", url, "-c", "SELECT pg_database_size(current_database())"],
                                  check=True, capture_output=True, text=True)
            result["backends"]["postgres"]["database_bytes"] = int(size.stdout.strip())
            version = subprocess.run(["psql", "-X", "-At", url, "-c", "SHOW server_version"],
                                     check=True, capture_output=True, text=True)
            result["postgres_version"] = version.stdout.strip()
        finally:
            subprocess.run([str(script), "stop"], check=False, env=env)
    result["sqlite_version"] = "SQLCipher's SQLite (see scripts/fetch-sqlcipher)"
    bl.write_result("warehouse", result)


if __name__ == "__main__":
    main()
