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

}  // namespace

const std::vector<Migration>& SqliteMigrations() {
  static const std::vector<Migration> kMigrations = {
      {1, "images, renditions, runs, jobs, api keys, idempotency, analysis views", kMigration1},
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
