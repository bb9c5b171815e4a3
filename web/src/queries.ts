// The overview's SQL, run through POST /v1/query on the warehouse's documented tables (docs/WAREHOUSE.md).
//
// Two dialects, told apart once per session (see detectDialect in api.ts):
// - SQLite stores times as RFC 3339 text ("2026-01-10T12:00:00.000Z"): a bucket is a prefix of it, and parameters
//   are ?1, ?2...;
// - PostgreSQL stores timestamptz: a bucket is to_char() of the UTC time in the same layout, and parameters are $1,
//   $2... (the queries are written with ?N and rewritten).
// Everything else is common SQL: CASE, coalesce, window functions, UNION ALL. Times are bound as RFC 3339 strings,
// which SQLite compares as text and PostgreSQL reads as timestamptz. The range panels read the hourly rollups
// (images_hourly, processing_latency_hourly; docs/WAREHOUSE.md), so ranges are whole UTC hours. Percentiles come from
// the rollup's latency histogram, as the processing_latency view computes them.

export type Dialect = 'sqlite' | 'postgres';
export type Bucket = 'hour' | 'day';

/** The bucket of a time column as text: "2026-01-10T12" (hour) or "2026-01-10" (day), UTC, in both dialects. */
function bucketExpr(d: Dialect, column: string, bucket: Bucket): string {
  if (d === 'postgres') {
    return `to_char(${column} AT TIME ZONE 'UTC', '${bucket === 'hour' ? 'YYYY-MM-DD"T"HH24' : 'YYYY-MM-DD'}')`;
  }
  return `substr(${column}, 1, ${bucket === 'hour' ? 13 : 10})`;
}

/** The statement in the dialect's parameter style: ?N for SQLite, $N for PostgreSQL. */
function finish(d: Dialect, sql: string): string {
  return d === 'postgres' ? sql.replace(/\?(\d+)/g, '$$$1') : sql;
}

/** Images, processed, failed and in progress among those received in the whole hours [?1, ?2). */
export function summarySql(d: Dialect): string {
  return finish(d, `SELECT coalesce(sum(images), 0) AS images,
  coalesce(sum(bytes), 0) AS bytes,
  coalesce(sum(processed), 0) AS processed,
  coalesce(sum(failed), 0) AS failed,
  coalesce(sum(in_progress), 0) AS in_progress
FROM images_hourly
WHERE hour >= ?1 AND hour < ?2`);
}

/** Images received per bucket and source in the whole hours [?1, ?2). */
export function ingestSql(d: Dialect, bucket: Bucket): string {
  const b = bucketExpr(d, 'hour', bucket);
  return finish(d, `SELECT ${b} AS ${bucket}, source, sum(images) AS images, sum(bytes) AS bytes
FROM images_hourly
WHERE hour >= ?1 AND hour < ?2
GROUP BY 1, 2
HAVING sum(images) > 0
ORDER BY 1, 2`);
}

/** Outcome of the images received per bucket in the whole hours [?1, ?2): processed, failed, still in progress. */
export function outcomeSql(d: Dialect, bucket: Bucket): string {
  const b = bucketExpr(d, 'hour', bucket);
  return finish(d, `SELECT ${b} AS ${bucket},
  sum(processed) AS processed,
  sum(failed) AS failed,
  sum(in_progress) AS in_progress
FROM images_hourly
WHERE hour >= ?1 AND hour < ?2
GROUP BY 1
HAVING sum(images) > 0
ORDER BY 1`);
}

/**
 * Successful runs finished per bucket and their p50/p95/max total seconds, from the latency histogram: a percentile
 * is the longest run of the 5%-wide bucket holding the nearest-rank run. Hourly buckets cover the whole hours
 * [?1, ?2); daily ones read the daily rollup and count whole UTC days, from the day of ?1 to the day of ?2.
 */
export function latencySql(d: Dialect, bucket: Bucket): string {
  const source = bucket === 'hour'
    ? `SELECT ${bucketExpr(d, 'hour', 'hour')} AS period, bucket, sum(runs) AS runs, max(max_seconds) AS max_seconds
  FROM processing_latency_hourly
  WHERE hour >= ?1 AND hour < ?2
  GROUP BY 1, 2`
    : `SELECT ${d === 'postgres' ? "to_char(day, 'YYYY-MM-DD')" : 'day'} AS period, bucket, sum(runs) AS runs,
    max(max_seconds) AS max_seconds
  FROM processing_latency_daily
  WHERE day >= ${dayOf(d, '?1')} AND day <= ${dayOf(d, '?2')}
  GROUP BY 1, 2`;
  return finish(d, `WITH histogram AS (
  ${source}
), cumulative AS (
  SELECT period, max_seconds,
    sum(runs) OVER (PARTITION BY period ORDER BY bucket ROWS UNBOUNDED PRECEDING) AS below,
    sum(runs) OVER (PARTITION BY period) AS n
  FROM histogram
)
SELECT period AS ${bucket}, max(n) AS runs,
  min(CASE WHEN below * 100 >= n * 50 THEN max_seconds END) AS p50_seconds,
  min(CASE WHEN below * 100 >= n * 95 THEN max_seconds END) AS p95_seconds,
  max(max_seconds) AS max_seconds
FROM cumulative
GROUP BY period
HAVING max(n) > 0
ORDER BY period`);
}

/** The UTC day of a bound time parameter, comparable with a rollup's `day`. */
function dayOf(d: Dialect, param: string): string {
  return d === 'postgres' ? `(${param}::timestamptz AT TIME ZONE 'UTC')::date` : `substr(${param}, 1, 10)`;
}

/** p95 over all successful runs finished in the whole hours [?1, ?2), from the latency histogram. */
export function latencyTotalSql(d: Dialect): string {
  return finish(d, `WITH histogram AS (
  SELECT bucket, sum(runs) AS runs, max(max_seconds) AS max_seconds
  FROM processing_latency_hourly
  WHERE hour >= ?1 AND hour < ?2
  GROUP BY bucket
), cumulative AS (
  SELECT max_seconds,
    sum(runs) OVER (ORDER BY bucket ROWS UNBOUNDED PRECEDING) AS below,
    sum(runs) OVER () AS n
  FROM histogram
)
SELECT coalesce(max(n), 0) AS runs, min(CASE WHEN below * 100 >= n * 95 THEN max_seconds END) AS p95_seconds
FROM cumulative`);
}

/** Bytes stored now, per container: originals and renditions of images whose blobs are still kept. */
export function storedSql(d: Dialect): string {
  return finish(d, `SELECT container, objects, bytes FROM stored_bytes`);
}

/** Images whose blobs retention will remove, per UTC day of expires_at, from the day of ?1 (now) on. */
export function expirationsSql(d: Dialect): string {
  return finish(d, `SELECT ${d === 'postgres' ? "to_char(day, 'YYYY-MM-DD')" : 'day'} AS day, sum(images) AS images,
  sum(bytes) AS bytes
FROM expirations_daily
WHERE day >= ${dayOf(d, '?1')}
GROUP BY 1
HAVING sum(images) > 0
ORDER BY 1
LIMIT 60`);
}

/** The latest failed images received in [?1, ?2). */
export function failuresSql(d: Dialect): string {
  return finish(d, `SELECT id, received_at, format, bytes, error
FROM images
WHERE processed_at IS NULL AND error IS NOT NULL AND received_at >= ?1 AND received_at < ?2
ORDER BY received_at DESC
LIMIT 20`);
}

/** The views of the warehouse, for "CSV of any view": SQLite's catalogue first, PostgreSQL's if that fails. */
export const viewListSql = [
  "SELECT name FROM sqlite_master WHERE type = 'view' ORDER BY name",
  `SELECT table_name AS name FROM information_schema.views
WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1`,
];

/** A view's name is only ever put in SQL after this check (names come from the catalogue, but still). */
export function viewSql(name: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new Error(`not a plain view name: ${name}`);
  return `SELECT * FROM ${name}`;
}

/** Processing attempts of one image (?1). */
export function runsSql(d: Dialect): string {
  return finish(d, `SELECT attempt, status, started_at, finished_at, decode_seconds, encode_seconds, total_seconds, error
FROM processing_runs
WHERE image_id = ?1
ORDER BY attempt`);
}
