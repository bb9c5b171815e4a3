#include "warehouse/sqlite/migrations.hpp"

#include <string>

namespace imgpipe {

namespace {

// Times are TEXT in FormatRfc3339's fixed format ("2026-11-25T22:55:42.123Z"): readable in SQL, and string order is
// time order. Column names of `images` listed in docs/WAREHOUSE.md as public are an interface for analysts' queries
// and dashboards: never rename them, add new columns instead.
constexpr std::string_view kMigration1 = R"sql(
CREATE TABLE images (
  id              TEXT PRIMARY KEY,
  sha256          TEXT NOT NULL,
  source          TEXT NOT NULL,
  source_ref      TEXT NOT NULL DEFAULT '',
  uploader_key_id TEXT NOT NULL DEFAULT '',
  received_at     TEXT NOT NULL,
  bytes           INTEGER NOT NULL,
  format          TEXT NOT NULL,
  content_type    TEXT NOT NULL,
  width           INTEGER NOT NULL,
  height          INTEGER NOT NULL,
  frames          INTEGER NOT NULL DEFAULT 1,
  has_alpha       INTEGER NOT NULL DEFAULT 0 CHECK (has_alpha IN (0, 1)),
  colour_space    TEXT NOT NULL DEFAULT '',
  has_icc         INTEGER NOT NULL DEFAULT 0 CHECK (has_icc IN (0, 1)),
  orientation     INTEGER,
  exif_make       TEXT,
  exif_model      TEXT,
  exif_taken_at   TEXT,
  gps_lat         REAL,
  gps_lon         REAL,
  gps_alt         REAL,
  lens_model      TEXT,
  software        TEXT,
  user_metadata   TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(user_metadata)),
  pipeline        TEXT NOT NULL,
  original_key    TEXT NOT NULL,
  status          TEXT NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'processing', 'processed', 'failed', 'expired', 'deleted')),
  processed_at    TEXT,
  expires_at      TEXT NOT NULL,
  expired_at      TEXT,
  error           TEXT,
  phash           TEXT CHECK (phash IS NULL OR length(phash) = 16),
  dominant_colour TEXT
);
CREATE INDEX images_by_received_at ON images (received_at, id);
CREATE INDEX images_by_status ON images (status, id);
CREATE INDEX images_by_source ON images (source, id);
-- Only rows the retention sweeper still has to visit.
CREATE INDEX images_live_by_expires_at ON images (expires_at) WHERE status NOT IN ('expired', 'deleted');

CREATE TABLE renditions (
  image_id     TEXT NOT NULL REFERENCES images (id),
  name         TEXT NOT NULL,
  key          TEXT NOT NULL,
  format       TEXT NOT NULL,
  content_type TEXT NOT NULL,
  width        INTEGER NOT NULL,
  height       INTEGER NOT NULL,
  bytes        INTEGER NOT NULL,
  created_at   TEXT NOT NULL,
  PRIMARY KEY (image_id, name)
);

CREATE TABLE processing_runs (
  id             INTEGER PRIMARY KEY,
  image_id       TEXT NOT NULL REFERENCES images (id),
  pipeline       TEXT NOT NULL,
  attempt        INTEGER NOT NULL,
  started_at     TEXT NOT NULL,
  finished_at    TEXT NOT NULL,
  status         TEXT NOT NULL,
  error          TEXT,
  decode_seconds REAL NOT NULL DEFAULT 0,
  encode_seconds REAL NOT NULL DEFAULT 0,
  total_seconds  REAL NOT NULL DEFAULT 0
);
CREATE INDEX processing_runs_by_image ON processing_runs (image_id, id);

-- AUTOINCREMENT: a job id is never reused, so a late Ack from a worker whose lease expired cannot hit a newer job.
CREATE TABLE jobs (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,
  image_id    TEXT NOT NULL UNIQUE REFERENCES images (id),
  pipeline    TEXT NOT NULL,
  attempts    INTEGER NOT NULL DEFAULT 0,
  not_before  TEXT NOT NULL,
  lease_owner TEXT,
  lease_until TEXT,
  last_error  TEXT,
  enqueued_at TEXT NOT NULL
);

CREATE TABLE api_keys (
  id          TEXT PRIMARY KEY,
  secret_hash TEXT NOT NULL UNIQUE,
  role        TEXT NOT NULL CHECK (role IN ('admin', 'uploader', 'reader', 'analyst')),
  name        TEXT NOT NULL DEFAULT '',
  created_at  TEXT NOT NULL,
  revoked_at  TEXT
);

CREATE TABLE idempotency (
  api_key_id    TEXT NOT NULL,
  key           TEXT NOT NULL,
  request_hash  TEXT NOT NULL,
  status_code   INTEGER NOT NULL,
  response_json TEXT NOT NULL,
  image_id      TEXT REFERENCES images (id),
  created_at    TEXT NOT NULL,
  PRIMARY KEY (api_key_id, key)
);

CREATE VIEW daily_ingest AS
SELECT substr(received_at, 1, 10) AS day, source, count(*) AS images, sum(bytes) AS bytes
FROM images
GROUP BY 1, 2;

CREATE VIEW format_mix AS
SELECT format, count(*) AS images, sum(bytes) AS bytes
FROM images
GROUP BY format;

-- Successful runs per UTC day (of finished_at) and pipeline. SQLite has no percentile function: p50/p95 are
-- nearest-rank percentiles, the value at rank ceil(p * n / 100) in total_seconds order.
CREATE VIEW processing_latency AS
WITH ranked AS (
  SELECT substr(finished_at, 1, 10) AS day, pipeline, total_seconds,
         row_number() OVER w AS rank, count(*) OVER w AS n
  FROM processing_runs
  WHERE status = 'processed'
  WINDOW w AS (PARTITION BY substr(finished_at, 1, 10), pipeline ORDER BY total_seconds
               ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
)
SELECT day, pipeline, max(n) AS runs,
       avg(total_seconds) AS avg_seconds,
       min(CASE WHEN rank >= (n * 50 + 99) / 100 THEN total_seconds END) AS p50_seconds,
       min(CASE WHEN rank >= (n * 95 + 99) / 100 THEN total_seconds END) AS p95_seconds,
       max(total_seconds) AS max_seconds
FROM ranked
GROUP BY day, pipeline;
)sql";

// Labels from processing scripts (docs/SCRIPTS.md), one row per label; several rows may share a key. A re-run of the
// same script version replaces that version's rows of the image (MetadataStore::RecordLabels).
constexpr std::string_view kMigration2 = R"sql(
CREATE TABLE image_labels (
  id             INTEGER PRIMARY KEY,
  image_id       TEXT NOT NULL REFERENCES images (id),
  script_name    TEXT NOT NULL,
  script_version TEXT NOT NULL,
  key            TEXT NOT NULL,
  value          TEXT NOT NULL,
  number         REAL,
  created_at     TEXT NOT NULL
);
CREATE INDEX image_labels_by_image ON image_labels (image_id, script_name, script_version);
CREATE INDEX image_labels_by_key ON image_labels (key, script_name, script_version);
ALTER TABLE processing_runs ADD COLUMN script_name TEXT NOT NULL DEFAULT '';
ALTER TABLE processing_runs ADD COLUMN script_version TEXT NOT NULL DEFAULT '';
)sql";

// The analysis views PostgreSQL gained in its migration 2, under the same names and with the same columns, and
// images_with_blob_state (PostgreSQL's migration 3 has it too). Numbered 3 because 2 is the scripts' labels here:
// docs/WAREHOUSE.md lists which version holds which change on each backend.
constexpr std::string_view kMigration3 = R"sql(
-- Columns are only ever added at the end of a view. Nearest-rank percentiles, as before: the total_seconds at rank
-- ceil(p * n / 100), which PostgreSQL's percentile_disc returns too.
DROP VIEW processing_latency;
CREATE VIEW processing_latency AS
WITH ranked AS (
  SELECT substr(finished_at, 1, 10) AS day, pipeline, total_seconds,
         row_number() OVER w AS rank, count(*) OVER w AS n
  FROM processing_runs
  WHERE status = 'processed'
  WINDOW w AS (PARTITION BY substr(finished_at, 1, 10), pipeline ORDER BY total_seconds
               ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
)
SELECT day, pipeline, max(n) AS runs,
       avg(total_seconds) AS avg_seconds,
       min(CASE WHEN rank >= (n * 50 + 99) / 100 THEN total_seconds END) AS p50_seconds,
       min(CASE WHEN rank >= (n * 95 + 99) / 100 THEN total_seconds END) AS p95_seconds,
       max(total_seconds) AS max_seconds,
       min(CASE WHEN rank >= (n * 99 + 99) / 100 THEN total_seconds END) AS p99_seconds
FROM ranked
GROUP BY day, pipeline;

-- hour: the start of the UTC hour, in the layout of every other time ("2026-01-10T12:00:00.000Z").
CREATE VIEW hourly_ingest AS
SELECT substr(received_at, 1, 13) || ':00:00.000Z' AS hour, source, count(*) AS images, sum(bytes) AS bytes
FROM images
GROUP BY 1, 2;

-- Power-of-two buckets: min_bytes <= bytes < below_bytes. bits is the bit length of bytes, read off its hex digits
-- (SQLite's log2() exists only in builds with math functions): 4 per digit after the first, 1..4 for the first.
CREATE VIEW size_histogram AS
WITH hexed AS (
  SELECT bytes, CASE WHEN bytes <= 0 THEN '' ELSE printf('%x', bytes) END AS hex
  FROM images
), sized AS (
  SELECT bytes,
         CASE WHEN hex = '' THEN 0
              ELSE 4 * (length(hex) - 1) + CASE WHEN substr(hex, 1, 1) >= '8' THEN 4
                                                WHEN substr(hex, 1, 1) >= '4' THEN 3
                                                WHEN substr(hex, 1, 1) >= '2' THEN 2
                                                ELSE 1 END
         END AS bits
  FROM hexed
)
SELECT CASE WHEN bits = 0 THEN 0 ELSE 1 << (bits - 1) END AS min_bytes,
       CASE WHEN bits >= 63 THEN NULL ELSE 1 << bits END AS below_bytes,
       count(*) AS images, sum(bytes) AS bytes
FROM sized
GROUP BY bits;

-- min_megapixels <= width x height / 10^6 < below_megapixels (NULL: no upper bound).
CREATE VIEW resolution_histogram AS
WITH bucketed AS (
  SELECT CASE WHEN px < 1000000 THEN 0 WHEN px < 2000000 THEN 1 WHEN px < 5000000 THEN 2 WHEN px < 12000000 THEN 5
              WHEN px < 24000000 THEN 12 WHEN px < 50000000 THEN 24 ELSE 50 END AS min_megapixels
  FROM (SELECT width * height AS px FROM images)
)
SELECT min_megapixels,
       CASE min_megapixels WHEN 0 THEN 1 WHEN 1 THEN 2 WHEN 2 THEN 5 WHEN 5 THEN 12 WHEN 12 THEN 24 WHEN 24 THEN 50
       END AS below_megapixels,
       count(*) AS images
FROM bucketed
GROUP BY 1;

-- Failed attempts (retried or final) per pipeline and error message.
CREATE VIEW failures_by_error AS
SELECT pipeline, coalesce(error, '') AS error, count(*) AS runs, count(DISTINCT image_id) AS images,
       count(*) FILTER (WHERE status = 'failed') AS final_failures, max(finished_at) AS last_at
FROM processing_runs
WHERE status <> 'processed'
GROUP BY 1, 2;

-- Bytes still in blob storage (images not yet expired or deleted), per container.
CREATE VIEW stored_bytes AS
SELECT 'originals' AS container, count(*) AS objects, coalesce(sum(bytes), 0) AS bytes
FROM images
WHERE status NOT IN ('expired', 'deleted')
UNION ALL
SELECT 'renditions', count(*), coalesce(sum(r.bytes), 0)
FROM renditions AS r JOIN images AS i ON i.id = r.image_id
WHERE i.status NOT IN ('expired', 'deleted');

-- Images whose blobs retention will remove, per UTC day of expires_at (past days: overdue for the sweeper).
CREATE VIEW upcoming_expirations AS
SELECT substr(expires_at, 1, 10) AS day, count(*) AS images, sum(bytes) AS bytes
FROM images
WHERE status NOT IN ('expired', 'deleted')
GROUP BY 1;

-- Every image with blob_state: 'present' while its blobs can be opened, 'expired' once retention removed them or
-- its expires_at has passed (the API refuses it from then on, even before the sweeper runs), 'deleted' when an
-- admin deleted it. 'held' is reserved for images under legal hold. "now" is the database's clock.
CREATE VIEW images_with_blob_state AS
SELECT id, sha256, source, source_ref, uploader_key_id, received_at, bytes, format, content_type, width, height, frames,
       has_alpha, colour_space, has_icc, orientation, exif_make, exif_model, exif_taken_at, gps_lat, gps_lon, gps_alt,
       lens_model, software, user_metadata, pipeline, original_key, status, processed_at, expires_at, expired_at,
       error, phash, dominant_colour,
       CASE WHEN status = 'deleted' THEN 'deleted'
            WHEN status = 'expired' OR expires_at <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now') THEN 'expired'
            ELSE 'present' END AS blob_state
FROM images;
)sql";

// Indexes for the dashboard's overview, measured by bench/warehouse.py on 1M rows (docs/BENCHMARKS.md). Each holds
// the columns its queries read, so a time range is answered from the index alone instead of one table lookup per
// row (which made a 30-day range slower than a full scan).
constexpr std::string_view kMigration4 = R"sql(
-- Latency panels: successful runs finished in a range.
CREATE INDEX processing_runs_by_finished_at ON processing_runs (finished_at, status, total_seconds);
-- Summary, ingest and outcome panels: images received in a range, by source and outcome.
CREATE INDEX images_overview ON images (received_at, source, status, bytes, processed_at, error);
-- The sweeper's index, now with what stored bytes and upcoming expirations read; same rows, same name.
DROP INDEX images_live_by_expires_at;
CREATE INDEX images_live_by_expires_at ON images (expires_at, bytes, id) WHERE status NOT IN ('expired', 'deleted');
)sql";

}  // namespace

const std::vector<Migration>& SqliteMigrations() {
  static const std::vector<Migration> kMigrations = {
      {1, "images, renditions, runs, jobs, api keys, idempotency, analysis views", kMigration1},
      {2, "processing scripts: image_labels, script name and version of each run", kMigration2},
      {3, "hourly ingest, size and resolution histograms, failures, stored bytes, expirations, p99, blob_state",
       kMigration3},
      {4, "covering indexes for the dashboard's overview", kMigration4},
  };
  return kMigrations;
}

Status ApplySqliteMigrations(SqliteDatabase& db, const Clock& clock) {
  IMGPIPE_TRY(db.Write([](SqliteConnection& conn) {
    return conn.Exec(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)");
  }));
  const int known = SqliteMigrations().back().version;
  for (const Migration& migration : SqliteMigrations()) {
    IMGPIPE_TRY(db.Write([&](SqliteConnection& conn) -> Status {
      int64_t newest = 0;
      bool already = false;
      {
        IMGPIPE_ASSIGN_OR_RETURN(
            auto stmt, conn.Prepare("SELECT coalesce(max(version), 0), coalesce(max(version = ?1), 0) "
                                    "FROM schema_migrations"));
        stmt.BindInt(1, migration.version);
        IMGPIPE_ASSIGN_OR_RETURN(bool row, stmt.Step());
        if (row) {
          newest = stmt.Int(0);
          already = stmt.Int(1) != 0;
        }
      }
      if (newest > known) {
        return MakeError(ErrorKind::kUnavailable,
                         "database " + db.path().string() + " has schema version " + std::to_string(newest) +
                             " but this imgpipe knows only up to " + std::to_string(known) +
                             "; run a newer imgpipe (or restore a backup made by this version)");
      }
      if (already) return Ok();  // applied earlier, or by another process just now
      IMGPIPE_TRY(conn.Exec(migration.sql));
      IMGPIPE_ASSIGN_OR_RETURN(
          auto record, conn.Prepare("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)"));
      record.BindInt(1, migration.version).BindText(2, migration.name).BindText(3, FormatRfc3339(clock.Now()));
      return record.Run();
    }));
  }
  return Ok();
}

}  // namespace imgpipe
