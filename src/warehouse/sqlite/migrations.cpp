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

// Rollups for the dashboard and the whole-table views (docs/WAREHOUSE.md, "Rollups"). The views of migrations 1 and 3
// read every row of their range, which on a million images takes seconds (docs/BENCHMARKS.md); these tables hold the
// same counts per UTC hour, kept exact by triggers in the transaction that changes the rows, so a 30-day range reads
// at most 720 hours. The views keep their names and columns and now read the rollups. Percentiles come from a
// latency histogram: the value reported is the largest run of the bucket holding the nearest-rank run, which is at
// most 5% above it (buckets grow by 5%).
constexpr std::string_view kMigration5 = R"sql(
-- Buckets of the latency histogram: lower_seconds <= total_seconds < upper_seconds. Bucket 0 is [0, 1 ms), each next
-- one 5% wider than the one before, up to days; the last has no upper bound. PostgreSQL's migration builds the same
-- boundaries with the same multiplications.
CREATE TABLE latency_buckets (
  bucket        INTEGER PRIMARY KEY,
  lower_seconds REAL NOT NULL,
  upper_seconds REAL
);
WITH RECURSIVE b (bucket, lower_seconds) AS (
  SELECT 1, 0.001
  UNION ALL
  SELECT bucket + 1, lower_seconds * 1.05 FROM b WHERE bucket < 399
)
INSERT INTO latency_buckets (bucket, lower_seconds, upper_seconds)
SELECT 0, 0.0, 0.001
UNION ALL
SELECT bucket, lower_seconds, CASE WHEN bucket < 399 THEN lower_seconds * 1.05 END FROM b;
CREATE INDEX latency_buckets_by_lower ON latency_buckets (lower_seconds);

-- One row per (UTC hour of received_at, source, format). live_*: images whose blobs are kept (status neither expired
-- nor deleted) and their renditions.
CREATE TABLE images_hourly (
  hour                 TEXT NOT NULL,
  source               TEXT NOT NULL,
  format               TEXT NOT NULL,
  images               INTEGER NOT NULL DEFAULT 0,
  bytes                INTEGER NOT NULL DEFAULT 0,
  processed            INTEGER NOT NULL DEFAULT 0,
  failed               INTEGER NOT NULL DEFAULT 0,
  in_progress          INTEGER NOT NULL DEFAULT 0,
  live_images          INTEGER NOT NULL DEFAULT 0,
  live_bytes           INTEGER NOT NULL DEFAULT 0,
  live_renditions      INTEGER NOT NULL DEFAULT 0,
  live_rendition_bytes INTEGER NOT NULL DEFAULT 0,
  deleted_images       INTEGER NOT NULL DEFAULT 0,
  deleted_bytes        INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (hour, source, format)
) WITHOUT ROWID;

-- One row per (format, power-of-two size bucket, resolution bucket); see size_histogram and resolution_histogram.
CREATE TABLE images_by_shape (
  format         TEXT NOT NULL,
  size_bits      INTEGER NOT NULL,
  min_megapixels INTEGER NOT NULL,
  images         INTEGER NOT NULL DEFAULT 0,
  bytes          INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (format, size_bits, min_megapixels)
) WITHOUT ROWID;

-- Successful runs per (UTC hour of finished_at, pipeline, latency bucket).
CREATE TABLE processing_latency_hourly (
  hour          TEXT NOT NULL,
  pipeline      TEXT NOT NULL,
  bucket        INTEGER NOT NULL,
  runs          INTEGER NOT NULL DEFAULT 0,
  total_seconds REAL NOT NULL DEFAULT 0,
  max_seconds   REAL NOT NULL DEFAULT 0,
  PRIMARY KEY (hour, pipeline, bucket)
) WITHOUT ROWID;


-- The rows already there, counted once; from here on the triggers above keep the counts.
INSERT INTO images_hourly (hour, source, format, images, bytes, processed, failed, in_progress, live_images, live_bytes,
                           live_renditions, live_rendition_bytes, deleted_images, deleted_bytes)
SELECT substr(i.received_at, 1, 13) || ':00:00.000Z', i.source, i.format, count(*), sum(i.bytes),
       sum(i.processed_at IS NOT NULL), sum(i.processed_at IS NULL AND i.error IS NOT NULL),
       sum(i.status IN ('queued', 'processing')), sum(i.status NOT IN ('expired', 'deleted')),
       sum(CASE WHEN i.status NOT IN ('expired', 'deleted') THEN i.bytes ELSE 0 END),
       sum(CASE WHEN i.status NOT IN ('expired', 'deleted') THEN coalesce(r.objects, 0) ELSE 0 END),
       sum(CASE WHEN i.status NOT IN ('expired', 'deleted') THEN coalesce(r.bytes, 0) ELSE 0 END),
       sum(i.status = 'deleted'), sum(CASE WHEN i.status = 'deleted' THEN i.bytes ELSE 0 END)
FROM images AS i
LEFT JOIN (SELECT image_id, count(*) AS objects, sum(bytes) AS bytes FROM renditions GROUP BY image_id) AS r
  ON r.image_id = i.id
GROUP BY 1, 2, 3;
INSERT INTO images_by_shape (format, size_bits, min_megapixels, images, bytes)
SELECT format, size_bits, min_megapixels, count(*), sum(bytes)
FROM (SELECT format, bytes,
             CASE WHEN bytes <= 0 THEN 0
                  ELSE 4 * (length(printf('%x', bytes)) - 1)
                       + CASE WHEN substr(printf('%x', bytes), 1, 1) >= '8' THEN 4
                              WHEN substr(printf('%x', bytes), 1, 1) >= '4' THEN 3
                              WHEN substr(printf('%x', bytes), 1, 1) >= '2' THEN 2
                              ELSE 1 END
             END AS size_bits,
             CASE WHEN width * height < 1000000 THEN 0 WHEN width * height < 2000000 THEN 1
                  WHEN width * height < 5000000 THEN 2 WHEN width * height < 12000000 THEN 5
                  WHEN width * height < 24000000 THEN 12 WHEN width * height < 50000000 THEN 24 ELSE 50 END
               AS min_megapixels
      FROM images)
GROUP BY 1, 2, 3;
INSERT INTO processing_latency_hourly (hour, pipeline, bucket, runs, total_seconds, max_seconds)
SELECT substr(finished_at, 1, 13) || ':00:00.000Z', pipeline,
       coalesce((SELECT bucket FROM latency_buckets WHERE lower_seconds <= total_seconds
                 ORDER BY lower_seconds DESC LIMIT 1), 0),
       count(*), sum(total_seconds), max(total_seconds)
FROM processing_runs
WHERE status = 'processed'
GROUP BY 1, 2, 3;

DROP VIEW daily_ingest;
CREATE VIEW daily_ingest AS
SELECT substr(hour, 1, 10) AS day, source, sum(images) AS images, sum(bytes) AS bytes
FROM images_hourly
GROUP BY 1, 2
HAVING sum(images) > 0;

DROP VIEW hourly_ingest;
CREATE VIEW hourly_ingest AS
SELECT hour, source, sum(images) AS images, sum(bytes) AS bytes
FROM images_hourly
GROUP BY 1, 2
HAVING sum(images) > 0;

DROP VIEW format_mix;
CREATE VIEW format_mix AS
SELECT format, sum(images) AS images, sum(bytes) AS bytes
FROM images_by_shape
GROUP BY format
HAVING sum(images) > 0;

DROP VIEW size_histogram;
CREATE VIEW size_histogram AS
SELECT CASE WHEN size_bits = 0 THEN 0 ELSE 1 << (size_bits - 1) END AS min_bytes,
       CASE WHEN size_bits >= 63 THEN NULL ELSE 1 << size_bits END AS below_bytes,
       sum(images) AS images, sum(bytes) AS bytes
FROM images_by_shape
GROUP BY size_bits
HAVING sum(images) > 0;

DROP VIEW resolution_histogram;
CREATE VIEW resolution_histogram AS
SELECT min_megapixels,
       CASE min_megapixels WHEN 0 THEN 1 WHEN 1 THEN 2 WHEN 2 THEN 5 WHEN 5 THEN 12 WHEN 12 THEN 24 WHEN 24 THEN 50
       END AS below_megapixels,
       sum(images) AS images
FROM images_by_shape
GROUP BY 1
HAVING sum(images) > 0;

DROP VIEW stored_bytes;
CREATE VIEW stored_bytes AS
SELECT 'originals' AS container, coalesce(sum(live_images), 0) AS objects, coalesce(sum(live_bytes), 0) AS bytes
FROM images_hourly
UNION ALL
SELECT 'renditions', coalesce(sum(live_renditions), 0), coalesce(sum(live_rendition_bytes), 0)
FROM images_hourly;

-- p50/p95/p99: the largest run of the histogram bucket that holds the nearest-rank run (rank ceil(p * n / 100)).
DROP VIEW processing_latency;
CREATE VIEW processing_latency AS
WITH daily AS (
  SELECT substr(hour, 1, 10) AS day, pipeline, bucket, sum(runs) AS runs, sum(total_seconds) AS total_seconds,
         max(max_seconds) AS max_seconds
  FROM processing_latency_hourly
  GROUP BY 1, 2, 3
), cumulative AS (
  SELECT day, pipeline, runs, total_seconds, max_seconds,
         sum(runs) OVER (PARTITION BY day, pipeline ORDER BY bucket ROWS UNBOUNDED PRECEDING) AS below,
         sum(runs) OVER (PARTITION BY day, pipeline) AS n
  FROM daily
)
SELECT day, pipeline, max(n) AS runs,
       sum(total_seconds) / max(n) AS avg_seconds,
       min(CASE WHEN below * 100 >= n * 50 THEN max_seconds END) AS p50_seconds,
       min(CASE WHEN below * 100 >= n * 95 THEN max_seconds END) AS p95_seconds,
       max(max_seconds) AS max_seconds,
       min(CASE WHEN below * 100 >= n * 99 THEN max_seconds END) AS p99_seconds
FROM cumulative
GROUP BY day, pipeline
HAVING max(n) > 0;

-- images_with_blob_state's states counted without reading every image: the rollup's totals, less the live images
-- whose expires_at has passed (the sweeper's index holds only live rows, so that is a short range).
CREATE VIEW blob_state_counts AS
WITH totals AS (
  SELECT coalesce(sum(images), 0) AS images, coalesce(sum(bytes), 0) AS bytes,
         coalesce(sum(live_images), 0) AS live_images, coalesce(sum(live_bytes), 0) AS live_bytes,
         coalesce(sum(deleted_images), 0) AS deleted_images, coalesce(sum(deleted_bytes), 0) AS deleted_bytes
  FROM images_hourly
), overdue AS (
  SELECT count(*) AS images, coalesce(sum(bytes), 0) AS bytes
  FROM images
  WHERE status NOT IN ('expired', 'deleted') AND expires_at <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
)
SELECT 'present' AS blob_state, t.live_images - o.images AS images, t.live_bytes - o.bytes AS bytes
FROM totals AS t, overdue AS o
UNION ALL
SELECT 'expired', t.images - t.live_images - t.deleted_images + o.images,
       t.bytes - t.live_bytes - t.deleted_bytes + o.bytes
FROM totals AS t, overdue AS o
UNION ALL
SELECT 'deleted', t.deleted_images, t.deleted_bytes
FROM totals AS t;

-- The rollups' keys and amounts come from these columns, which imgpipe never changes after the insert.
CREATE TRIGGER images_immutable_facts BEFORE UPDATE OF received_at, source, format, bytes, width, height ON images
WHEN NEW.received_at IS NOT OLD.received_at OR NEW.source IS NOT OLD.source OR NEW.format IS NOT OLD.format
  OR NEW.bytes IS NOT OLD.bytes OR NEW.width IS NOT OLD.width OR NEW.height IS NOT OLD.height
BEGIN
  SELECT RAISE(ABORT, 'received_at, source, format, bytes, width and height of an image never change');
END;

CREATE TRIGGER images_rollup_insert AFTER INSERT ON images
BEGIN
  INSERT INTO images_hourly (hour, source, format, images, bytes, processed, failed, in_progress, live_images,
                             live_bytes, deleted_images, deleted_bytes)
  VALUES (substr(NEW.received_at, 1, 13) || ':00:00.000Z', NEW.source, NEW.format, 1, NEW.bytes,
          NEW.processed_at IS NOT NULL, NEW.processed_at IS NULL AND NEW.error IS NOT NULL,
          NEW.status IN ('queued', 'processing'), NEW.status NOT IN ('expired', 'deleted'),
          CASE WHEN NEW.status NOT IN ('expired', 'deleted') THEN NEW.bytes ELSE 0 END,
          NEW.status = 'deleted', CASE WHEN NEW.status = 'deleted' THEN NEW.bytes ELSE 0 END)
  ON CONFLICT (hour, source, format) DO UPDATE SET
    images = images + excluded.images, bytes = bytes + excluded.bytes, processed = processed + excluded.processed,
    failed = failed + excluded.failed, in_progress = in_progress + excluded.in_progress,
    live_images = live_images + excluded.live_images, live_bytes = live_bytes + excluded.live_bytes,
    deleted_images = deleted_images + excluded.deleted_images, deleted_bytes = deleted_bytes + excluded.deleted_bytes;
  INSERT INTO images_by_shape (format, size_bits, min_megapixels, images, bytes)
  VALUES (NEW.format,
          CASE WHEN NEW.bytes <= 0 THEN 0
               ELSE 4 * (length(printf('%x', NEW.bytes)) - 1)
                    + CASE WHEN substr(printf('%x', NEW.bytes), 1, 1) >= '8' THEN 4
                           WHEN substr(printf('%x', NEW.bytes), 1, 1) >= '4' THEN 3
                           WHEN substr(printf('%x', NEW.bytes), 1, 1) >= '2' THEN 2
                           ELSE 1 END
          END,
          CASE WHEN NEW.width * NEW.height < 1000000 THEN 0 WHEN NEW.width * NEW.height < 2000000 THEN 1
               WHEN NEW.width * NEW.height < 5000000 THEN 2 WHEN NEW.width * NEW.height < 12000000 THEN 5
               WHEN NEW.width * NEW.height < 24000000 THEN 12 WHEN NEW.width * NEW.height < 50000000 THEN 24
               ELSE 50 END,
          1, NEW.bytes)
  ON CONFLICT (format, size_bits, min_megapixels) DO UPDATE SET
    images = images + excluded.images, bytes = bytes + excluded.bytes;
END;

-- What the row counted before, taken away, and what it counts now, added: one upsert of the differences.
CREATE TRIGGER images_rollup_update AFTER UPDATE OF status, processed_at, error ON images
BEGIN
  INSERT INTO images_hourly (hour, source, format, processed, failed, in_progress, live_images, live_bytes,
                             live_renditions, live_rendition_bytes, deleted_images, deleted_bytes)
  SELECT substr(NEW.received_at, 1, 13) || ':00:00.000Z', NEW.source, NEW.format,
         (NEW.processed_at IS NOT NULL) - (OLD.processed_at IS NOT NULL),
         (NEW.processed_at IS NULL AND NEW.error IS NOT NULL) - (OLD.processed_at IS NULL AND OLD.error IS NOT NULL),
         (NEW.status IN ('queued', 'processing')) - (OLD.status IN ('queued', 'processing')),
         new_live - old_live, (new_live - old_live) * NEW.bytes,
         (new_live - old_live) * r.objects, (new_live - old_live) * r.bytes,
         (NEW.status = 'deleted') - (OLD.status = 'deleted'),
         ((NEW.status = 'deleted') - (OLD.status = 'deleted')) * NEW.bytes
  FROM (SELECT NEW.status NOT IN ('expired', 'deleted') AS new_live,
               OLD.status NOT IN ('expired', 'deleted') AS old_live) AS l,
       (SELECT count(*) AS objects, coalesce(sum(bytes), 0) AS bytes FROM renditions WHERE image_id = NEW.id) AS r
  WHERE true
  ON CONFLICT (hour, source, format) DO UPDATE SET
    processed = processed + excluded.processed, failed = failed + excluded.failed,
    in_progress = in_progress + excluded.in_progress, live_images = live_images + excluded.live_images,
    live_bytes = live_bytes + excluded.live_bytes, live_renditions = live_renditions + excluded.live_renditions,
    live_rendition_bytes = live_rendition_bytes + excluded.live_rendition_bytes,
    deleted_images = deleted_images + excluded.deleted_images, deleted_bytes = deleted_bytes + excluded.deleted_bytes;
END;

CREATE TRIGGER images_rollup_delete AFTER DELETE ON images
BEGIN
  UPDATE images_hourly SET
    images = images - 1, bytes = bytes - OLD.bytes,
    processed = processed - (OLD.processed_at IS NOT NULL),
    failed = failed - (OLD.processed_at IS NULL AND OLD.error IS NOT NULL),
    in_progress = in_progress - (OLD.status IN ('queued', 'processing')),
    live_images = live_images - (OLD.status NOT IN ('expired', 'deleted')),
    live_bytes = live_bytes - CASE WHEN OLD.status NOT IN ('expired', 'deleted') THEN OLD.bytes ELSE 0 END,
    deleted_images = deleted_images - (OLD.status = 'deleted'),
    deleted_bytes = deleted_bytes - CASE WHEN OLD.status = 'deleted' THEN OLD.bytes ELSE 0 END
  WHERE hour = substr(OLD.received_at, 1, 13) || ':00:00.000Z' AND source = OLD.source AND format = OLD.format;
  UPDATE images_by_shape SET images = images - 1, bytes = bytes - OLD.bytes
  WHERE format = OLD.format
    AND size_bits = CASE WHEN OLD.bytes <= 0 THEN 0
                         ELSE 4 * (length(printf('%x', OLD.bytes)) - 1)
                              + CASE WHEN substr(printf('%x', OLD.bytes), 1, 1) >= '8' THEN 4
                                     WHEN substr(printf('%x', OLD.bytes), 1, 1) >= '4' THEN 3
                                     WHEN substr(printf('%x', OLD.bytes), 1, 1) >= '2' THEN 2
                                     ELSE 1 END
                    END
    AND min_megapixels = CASE WHEN OLD.width * OLD.height < 1000000 THEN 0 WHEN OLD.width * OLD.height < 2000000 THEN 1
                              WHEN OLD.width * OLD.height < 5000000 THEN 2 WHEN OLD.width * OLD.height < 12000000 THEN 5
                              WHEN OLD.width * OLD.height < 24000000 THEN 12
                              WHEN OLD.width * OLD.height < 50000000 THEN 24 ELSE 50 END;
END;

-- Renditions count toward stored bytes while their image is live.
CREATE TRIGGER renditions_rollup_insert AFTER INSERT ON renditions
BEGIN
  UPDATE images_hourly
  SET live_renditions = live_renditions + 1, live_rendition_bytes = live_rendition_bytes + NEW.bytes
  WHERE (hour, source, format) = (SELECT substr(received_at, 1, 13) || ':00:00.000Z', source, format FROM images
                                  WHERE id = NEW.image_id AND status NOT IN ('expired', 'deleted'));
END;
CREATE TRIGGER renditions_rollup_update AFTER UPDATE OF bytes, image_id ON renditions
BEGIN
  UPDATE images_hourly
  SET live_renditions = live_renditions - 1, live_rendition_bytes = live_rendition_bytes - OLD.bytes
  WHERE (hour, source, format) = (SELECT substr(received_at, 1, 13) || ':00:00.000Z', source, format FROM images
                                  WHERE id = OLD.image_id AND status NOT IN ('expired', 'deleted'));
  UPDATE images_hourly
  SET live_renditions = live_renditions + 1, live_rendition_bytes = live_rendition_bytes + NEW.bytes
  WHERE (hour, source, format) = (SELECT substr(received_at, 1, 13) || ':00:00.000Z', source, format FROM images
                                  WHERE id = NEW.image_id AND status NOT IN ('expired', 'deleted'));
END;
CREATE TRIGGER renditions_rollup_delete AFTER DELETE ON renditions
BEGIN
  UPDATE images_hourly
  SET live_renditions = live_renditions - 1, live_rendition_bytes = live_rendition_bytes - OLD.bytes
  WHERE (hour, source, format) = (SELECT substr(received_at, 1, 13) || ':00:00.000Z', source, format FROM images
                                  WHERE id = OLD.image_id AND status NOT IN ('expired', 'deleted'));
END;

CREATE TRIGGER processing_runs_rollup_insert AFTER INSERT ON processing_runs WHEN NEW.status = 'processed'
BEGIN
  INSERT INTO processing_latency_hourly (hour, pipeline, bucket, runs, total_seconds, max_seconds)
  VALUES (substr(NEW.finished_at, 1, 13) || ':00:00.000Z', NEW.pipeline,
          coalesce((SELECT bucket FROM latency_buckets WHERE lower_seconds <= NEW.total_seconds
                    ORDER BY lower_seconds DESC LIMIT 1), 0),
          1, NEW.total_seconds, NEW.total_seconds)
  ON CONFLICT (hour, pipeline, bucket) DO UPDATE SET
    runs = runs + 1, total_seconds = total_seconds + excluded.total_seconds,
    max_seconds = max(max_seconds, excluded.max_seconds);
END;
)sql";

// Legal holds and the purge log (docs/WAREHOUSE.md): images kept past retention until released, and every deletion of
// blobs with what, when and why. blob_state gains 'held'.
constexpr std::string_view kMigration6 = R"sql(
-- One row per hold; released_at set when it ends. At most one hold in force per image.
CREATE TABLE legal_holds (
  id          INTEGER PRIMARY KEY,
  image_id    TEXT NOT NULL REFERENCES images (id),
  reason      TEXT NOT NULL,
  held_by     TEXT NOT NULL,
  held_at     TEXT NOT NULL,
  released_by TEXT,
  released_at TEXT
);
CREATE UNIQUE INDEX legal_holds_in_force ON legal_holds (image_id) WHERE released_at IS NULL;

-- One row per deletion of blobs: an image's original and renditions (image_id set, what = 'image'), or the leftovers
-- of a day folder past retention (image_id NULL, what = 'container/prefix'). finished_at NULL: in progress, or
-- interrupted by a crash and redone by the next sweep.
CREATE TABLE purges (
  id          INTEGER PRIMARY KEY,
  image_id    TEXT,
  what        TEXT NOT NULL,
  reason      TEXT NOT NULL,
  actor       TEXT NOT NULL,
  started_at  TEXT NOT NULL,
  finished_at TEXT,
  objects     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX purges_by_image ON purges (image_id, id);
CREATE INDEX purges_by_started_at ON purges (started_at);

-- Images on legal hold now.
CREATE VIEW images_on_hold AS
SELECT h.image_id, h.reason, h.held_by, h.held_at, i.source, i.format, i.bytes, i.received_at, i.expires_at
FROM legal_holds AS h JOIN images AS i ON i.id = h.image_id
WHERE h.released_at IS NULL;

-- 'held': the blobs are kept by a legal hold (even past expires_at) until it is released.
DROP VIEW images_with_blob_state;
CREATE VIEW images_with_blob_state AS
SELECT id, sha256, source, source_ref, uploader_key_id, received_at, bytes, format, content_type, width, height, frames,
       has_alpha, colour_space, has_icc, orientation, exif_make, exif_model, exif_taken_at, gps_lat, gps_lon, gps_alt,
       lens_model, software, user_metadata, pipeline, original_key, status, processed_at, expires_at, expired_at,
       error, phash, dominant_colour,
       CASE WHEN status = 'deleted' THEN 'deleted'
            WHEN status = 'expired' THEN 'expired'
            WHEN EXISTS (SELECT 1 FROM legal_holds AS h WHERE h.image_id = images.id AND h.released_at IS NULL)
              THEN 'held'
            WHEN expires_at <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now') THEN 'expired'
            ELSE 'present' END AS blob_state
FROM images;

DROP VIEW blob_state_counts;
CREATE VIEW blob_state_counts AS
WITH totals AS (
  SELECT coalesce(sum(images), 0) AS images, coalesce(sum(bytes), 0) AS bytes,
         coalesce(sum(live_images), 0) AS live_images, coalesce(sum(live_bytes), 0) AS live_bytes,
         coalesce(sum(deleted_images), 0) AS deleted_images, coalesce(sum(deleted_bytes), 0) AS deleted_bytes
  FROM images_hourly
), held AS (
  SELECT count(*) AS images, coalesce(sum(i.bytes), 0) AS bytes
  FROM legal_holds AS h JOIN images AS i ON i.id = h.image_id
  WHERE h.released_at IS NULL AND i.status NOT IN ('expired', 'deleted')
), overdue AS (
  SELECT count(*) AS images, coalesce(sum(bytes), 0) AS bytes
  FROM images
  WHERE status NOT IN ('expired', 'deleted') AND expires_at <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    AND NOT EXISTS (SELECT 1 FROM legal_holds AS h WHERE h.image_id = images.id AND h.released_at IS NULL)
)
SELECT 'present' AS blob_state, t.live_images - h.images - o.images AS images,
       t.live_bytes - h.bytes - o.bytes AS bytes
FROM totals AS t, held AS h, overdue AS o
UNION ALL
SELECT 'held', h.images, h.bytes
FROM held AS h
UNION ALL
SELECT 'expired', t.images - t.live_images - t.deleted_images + o.images,
       t.bytes - t.live_bytes - t.deleted_bytes + o.bytes
FROM totals AS t, overdue AS o
UNION ALL
SELECT 'deleted', t.deleted_images, t.deleted_bytes
FROM totals AS t;
)sql";

// failures_by_error read every processing run to keep the failed ones (3% of them on the benchmark's data); this
// index holds just those, with every column the view reads.
constexpr std::string_view kMigration7 = R"sql(
CREATE INDEX processing_runs_failed ON processing_runs (pipeline, error, image_id, status, finished_at)
WHERE status <> 'processed';
)sql";

// Two more rollups for what still read many rows at 1M images (docs/BENCHMARKS.md): the latency histogram per UTC
// day (processing_latency and the dashboard's daily latency read it instead of 24 hourly rows per day), and live
// images per UTC day of expires_at (upcoming_expirations and the dashboard's expirations panel).
constexpr std::string_view kMigration8 = R"sql(
CREATE TABLE processing_latency_daily (
  day           TEXT NOT NULL,
  pipeline      TEXT NOT NULL,
  bucket        INTEGER NOT NULL,
  runs          INTEGER NOT NULL DEFAULT 0,
  total_seconds REAL NOT NULL DEFAULT 0,
  max_seconds   REAL NOT NULL DEFAULT 0,
  PRIMARY KEY (day, pipeline, bucket)
) WITHOUT ROWID;
INSERT INTO processing_latency_daily (day, pipeline, bucket, runs, total_seconds, max_seconds)
SELECT substr(hour, 1, 10), pipeline, bucket, sum(runs), sum(total_seconds), max(max_seconds)
FROM processing_latency_hourly
GROUP BY 1, 2, 3;
CREATE TRIGGER processing_runs_rollup_daily AFTER INSERT ON processing_runs WHEN NEW.status = 'processed'
BEGIN
  INSERT INTO processing_latency_daily (day, pipeline, bucket, runs, total_seconds, max_seconds)
  VALUES (substr(NEW.finished_at, 1, 10), NEW.pipeline,
          coalesce((SELECT bucket FROM latency_buckets WHERE lower_seconds <= NEW.total_seconds
                    ORDER BY lower_seconds DESC LIMIT 1), 0),
          1, NEW.total_seconds, NEW.total_seconds)
  ON CONFLICT (day, pipeline, bucket) DO UPDATE SET
    runs = runs + 1, total_seconds = total_seconds + excluded.total_seconds,
    max_seconds = max(max_seconds, excluded.max_seconds);
END;

-- Live images (status neither expired nor deleted) per UTC day of expires_at.
CREATE TABLE expirations_daily (
  day    TEXT PRIMARY KEY,
  images INTEGER NOT NULL DEFAULT 0,
  bytes  INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO expirations_daily (day, images, bytes)
SELECT substr(expires_at, 1, 10), count(*), sum(bytes)
FROM images
WHERE status NOT IN ('expired', 'deleted')
GROUP BY 1;
CREATE TRIGGER images_immutable_expiry BEFORE UPDATE OF expires_at ON images
WHEN NEW.expires_at IS NOT OLD.expires_at
BEGIN
  SELECT RAISE(ABORT, 'the expires_at of an image never changes');
END;
CREATE TRIGGER images_expirations_insert AFTER INSERT ON images WHEN NEW.status NOT IN ('expired', 'deleted')
BEGIN
  INSERT INTO expirations_daily (day, images, bytes) VALUES (substr(NEW.expires_at, 1, 10), 1, NEW.bytes)
  ON CONFLICT (day) DO UPDATE SET images = images + 1, bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER images_expirations_update AFTER UPDATE OF status ON images
WHEN (NEW.status NOT IN ('expired', 'deleted')) <> (OLD.status NOT IN ('expired', 'deleted'))
BEGIN
  INSERT INTO expirations_daily (day, images, bytes)
  VALUES (substr(NEW.expires_at, 1, 10),
          CASE WHEN NEW.status NOT IN ('expired', 'deleted') THEN 1 ELSE -1 END,
          CASE WHEN NEW.status NOT IN ('expired', 'deleted') THEN NEW.bytes ELSE -NEW.bytes END)
  ON CONFLICT (day) DO UPDATE SET images = images + excluded.images, bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER images_expirations_delete AFTER DELETE ON images WHEN OLD.status NOT IN ('expired', 'deleted')
BEGIN
  UPDATE expirations_daily SET images = images - 1, bytes = bytes - OLD.bytes
  WHERE day = substr(OLD.expires_at, 1, 10);
END;

DROP VIEW processing_latency;
CREATE VIEW processing_latency AS
WITH cumulative AS (
  SELECT day, pipeline, runs, total_seconds, max_seconds,
         sum(runs) OVER (PARTITION BY day, pipeline ORDER BY bucket ROWS UNBOUNDED PRECEDING) AS below,
         sum(runs) OVER (PARTITION BY day, pipeline) AS n
  FROM processing_latency_daily
)
SELECT day, pipeline, max(n) AS runs,
       sum(total_seconds) / max(n) AS avg_seconds,
       min(CASE WHEN below * 100 >= n * 50 THEN max_seconds END) AS p50_seconds,
       min(CASE WHEN below * 100 >= n * 95 THEN max_seconds END) AS p95_seconds,
       max(max_seconds) AS max_seconds,
       min(CASE WHEN below * 100 >= n * 99 THEN max_seconds END) AS p99_seconds
FROM cumulative
GROUP BY day, pipeline
HAVING max(n) > 0;

DROP VIEW upcoming_expirations;
CREATE VIEW upcoming_expirations AS
SELECT day, sum(images) AS images, sum(bytes) AS bytes
FROM expirations_daily
GROUP BY day
HAVING sum(images) > 0;
)sql";

// One row per lease: the process that holds `name` (e.g. the retention sweeper's) until expires_at. Taken and renewed
// by an upsert that succeeds only for the holder or once the lease ran out.
constexpr std::string_view kMigration9 = R"sql(
CREATE TABLE leases (
  name       TEXT PRIMARY KEY,
  owner      TEXT NOT NULL,
  expires_at TEXT NOT NULL
);
)sql";

// How many times processing of the image was started since it was (re)queued, counted and committed before the
// pipeline runs: a queue that redelivers after a crash without counting the attempt (Kafka) still sees an image that
// kills its worker every time, and gives it up after queue.max_attempts. Constant default: no table rewrite.
constexpr std::string_view kMigration10 = R"sql(
ALTER TABLE images ADD COLUMN processing_starts INTEGER NOT NULL DEFAULT 0;
)sql";

}  // namespace

const std::vector<Migration>& SqliteMigrations() {
  static const std::vector<Migration> kMigrations = {
      {1, "images, renditions, runs, jobs, api keys, idempotency, analysis views", kMigration1},
      {2, "processing scripts: image_labels, script name and version of each run", kMigration2},
      {3, "hourly ingest, size and resolution histograms, failures, stored bytes, expirations, p99, blob_state",
       kMigration3},
      {4, "covering indexes for the dashboard's overview", kMigration4},
      {5, "hourly rollups kept by triggers; views over them; blob_state_counts", kMigration5},
      {6, "legal holds, the purge log, blob_state 'held', images_on_hold", kMigration6},
      {7, "a partial covering index of failed runs for failures_by_error", kMigration7},
      {8, "daily latency and expiration rollups; processing_latency and upcoming_expirations read them", kMigration8},
      {9, "leases: one holder at a time for work like the retention sweep", kMigration9},
      {10, "images.processing_starts: processing attempts started, counted before each runs", kMigration10},
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
