#include "warehouse/postgres/postgres_migrations.hpp"

#include <string>

namespace imgpipe {

namespace {

// Key of the transaction-level advisory lock every migration holds ("imgpipe" in ASCII, then 01).
constexpr int64_t kMigrationLock = 0x696d677069706501;

// The same tables, columns and views as SQLite's migration 1, in PostgreSQL's types: times are timestamptz,
// booleans boolean, user metadata jsonb. Column names of `images` listed in docs/WAREHOUSE.md as public are an
// interface for analysts' queries and dashboards: never rename them, add new columns instead.
constexpr std::string_view kMigration1 = R"sql(
-- Every image id with its row's partition key. `images` is partitioned by UTC day of received_at, and PostgreSQL
-- enforces uniqueness on a partitioned table only for keys that contain the partition key: this table keeps ids
-- unique across days, lets a lookup by id find the one partition to read, and is what the other tables reference.
-- Ids have the "C" collation wherever they appear: byte order (as in SQLite), whatever the database's default.
CREATE TABLE image_ids (
  id          text COLLATE "C" PRIMARY KEY,
  received_at timestamptz NOT NULL
);

CREATE TABLE images (
  id              text COLLATE "C" NOT NULL REFERENCES image_ids (id),
  sha256          text NOT NULL,
  source          text NOT NULL,
  source_ref      text NOT NULL DEFAULT '',
  uploader_key_id text NOT NULL DEFAULT '',
  received_at     timestamptz NOT NULL,
  bytes           bigint NOT NULL,
  format          text NOT NULL,
  content_type    text NOT NULL,
  width           integer NOT NULL,
  height          integer NOT NULL,
  frames          integer NOT NULL DEFAULT 1,
  has_alpha       boolean NOT NULL DEFAULT false,
  colour_space    text NOT NULL DEFAULT '',
  has_icc         boolean NOT NULL DEFAULT false,
  orientation     integer,
  exif_make       text,
  exif_model      text,
  exif_taken_at   text,
  gps_lat         double precision,
  gps_lon         double precision,
  gps_alt         double precision,
  lens_model      text,
  software        text,
  user_metadata   jsonb NOT NULL DEFAULT '{}',
  pipeline        text NOT NULL,
  original_key    text NOT NULL,
  status          text NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'processing', 'processed', 'failed', 'expired', 'deleted')),
  processed_at    timestamptz,
  expires_at      timestamptz NOT NULL,
  expired_at      timestamptz,
  error           text,
  phash           text CHECK (phash IS NULL OR length(phash) = 16),
  dominant_colour text,
  PRIMARY KEY (id, received_at)
) PARTITION BY RANGE (received_at);
-- Day partitions (images_pYYYYMMDD) are created by the store ahead of the rows that need them. A row whose day has
-- no partition (creating it failed) lands here.
CREATE TABLE images_default PARTITION OF images DEFAULT;
-- Dashboards ask for time ranges, alone or by source, status or format.
CREATE INDEX images_by_received_at ON images (received_at, id);
CREATE INDEX images_by_source ON images (source, received_at);
CREATE INDEX images_by_status ON images (status, received_at);
CREATE INDEX images_by_format ON images (format, received_at);
-- Only rows the retention sweeper still has to visit.
CREATE INDEX images_live_by_expires_at ON images (expires_at) WHERE status NOT IN ('expired', 'deleted');

CREATE TABLE renditions (
  image_id     text COLLATE "C" NOT NULL REFERENCES image_ids (id),
  name         text NOT NULL,
  key          text NOT NULL,
  format       text NOT NULL,
  content_type text NOT NULL,
  width        integer NOT NULL,
  height       integer NOT NULL,
  bytes        bigint NOT NULL,
  created_at   timestamptz NOT NULL,
  PRIMARY KEY (image_id, name)
);

CREATE TABLE processing_runs (
  id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  image_id       text COLLATE "C" NOT NULL REFERENCES image_ids (id),
  pipeline       text NOT NULL,
  attempt        integer NOT NULL,
  started_at     timestamptz NOT NULL,
  finished_at    timestamptz NOT NULL,
  status         text NOT NULL,
  error          text,
  decode_seconds double precision NOT NULL DEFAULT 0,
  encode_seconds double precision NOT NULL DEFAULT 0,
  total_seconds  double precision NOT NULL DEFAULT 0
);
CREATE INDEX processing_runs_by_image ON processing_runs (image_id, id);
CREATE INDEX processing_runs_by_finished_at ON processing_runs (finished_at);

-- The work queue (PostgresJobQueue). Identity values are never reused, so a late Ack from a worker whose lease
-- expired cannot hit a newer job.
CREATE TABLE jobs (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  image_id    text COLLATE "C" NOT NULL UNIQUE REFERENCES image_ids (id),
  pipeline    text NOT NULL,
  attempts    integer NOT NULL DEFAULT 0,
  not_before  timestamptz NOT NULL,
  lease_owner text,
  lease_until timestamptz,
  last_error  text,
  enqueued_at timestamptz NOT NULL
);

CREATE TABLE api_keys (
  id          text PRIMARY KEY,
  secret_hash text NOT NULL UNIQUE,
  role        text NOT NULL CHECK (role IN ('admin', 'uploader', 'reader', 'analyst')),
  name        text NOT NULL DEFAULT '',
  created_at  timestamptz NOT NULL,
  revoked_at  timestamptz
);

CREATE TABLE idempotency (
  api_key_id    text NOT NULL,
  key           text NOT NULL,
  request_hash  text NOT NULL,
  status_code   integer NOT NULL,
  response_json text NOT NULL,
  image_id      text COLLATE "C" REFERENCES image_ids (id),
  created_at    timestamptz NOT NULL,
  PRIMARY KEY (api_key_id, key)
);

CREATE VIEW daily_ingest AS
SELECT (received_at AT TIME ZONE 'UTC')::date AS day, source, count(*) AS images, sum(bytes)::bigint AS bytes
FROM images
GROUP BY 1, 2;

CREATE VIEW format_mix AS
SELECT format, count(*) AS images, sum(bytes)::bigint AS bytes
FROM images
GROUP BY format;

-- Successful runs per UTC day (of finished_at) and pipeline; percentiles interpolate between neighbouring runs.
CREATE VIEW processing_latency AS
SELECT (finished_at AT TIME ZONE 'UTC')::date AS day, pipeline, count(*) AS runs,
       avg(total_seconds) AS avg_seconds,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY total_seconds) AS p50_seconds,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY total_seconds) AS p95_seconds,
       max(total_seconds) AS max_seconds
FROM processing_runs
WHERE status = 'processed'
GROUP BY 1, 2;

-- The analysts' role: it may read the analysis tables and views, never api_keys or idempotency, and write nothing.
-- Roles belong to the whole server, so another database's migration may be creating it at the same moment.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'imgpipe_analyst') THEN
    BEGIN
      CREATE ROLE imgpipe_analyst NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
      NULL;
    END;
  END IF;
  -- imgpipe switches to the role (SET LOCAL ROLE) for analyst queries.
  IF NOT pg_has_role(current_user, 'imgpipe_analyst', 'MEMBER') THEN
    BEGIN
      GRANT imgpipe_analyst TO CURRENT_USER;
    EXCEPTION WHEN unique_violation THEN
      NULL;
    END;
  END IF;
  EXECUTE format('GRANT USAGE ON SCHEMA %I TO imgpipe_analyst', current_schema());
END
$$;
GRANT SELECT ON image_ids, images, renditions, processing_runs, jobs, schema_migrations, daily_ingest, format_mix,
  processing_latency TO imgpipe_analyst;
-- set_config() inside a SELECT could switch the role back (set_config('role', ...)) to the session user for the
-- rest of the statement. Only the owner of pg_catalog (a superuser) can revoke it; otherwise this is a warning and
-- imgpipe refuses analyst queries until an administrator does (PostgresMetadataStore::Query).
REVOKE EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) TO CURRENT_USER;
)sql";

// The analysis views of docs/WAREHOUSE.md beyond SQLite's first three.
constexpr std::string_view kMigration2 = R"sql(
-- Columns are only ever added at the end of a view.
CREATE OR REPLACE VIEW processing_latency AS
SELECT (finished_at AT TIME ZONE 'UTC')::date AS day, pipeline, count(*) AS runs,
       avg(total_seconds) AS avg_seconds,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY total_seconds) AS p50_seconds,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY total_seconds) AS p95_seconds,
       max(total_seconds) AS max_seconds,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY total_seconds) AS p99_seconds
FROM processing_runs
WHERE status = 'processed'
GROUP BY 1, 2;

CREATE VIEW hourly_ingest AS
SELECT date_trunc('hour', received_at, 'UTC') AS hour, source, count(*) AS images, sum(bytes)::bigint AS bytes
FROM images
GROUP BY 1, 2;

-- Power-of-two buckets: min_bytes <= bytes < below_bytes.
CREATE VIEW size_histogram AS
WITH sized AS (
  SELECT CASE WHEN bytes <= 0 THEN 0 ELSE length(ltrim(bytes::bit(64)::text, '0')) END AS bits, bytes
  FROM images
)
SELECT CASE WHEN bits = 0 THEN 0 ELSE 1::bigint << (bits - 1) END AS min_bytes,
       CASE WHEN bits >= 63 THEN NULL ELSE 1::bigint << bits END AS below_bytes,
       count(*) AS images, sum(bytes)::bigint AS bytes
FROM sized
GROUP BY bits;

-- min_megapixels <= width x height / 10^6 < below_megapixels (NULL: no upper bound).
CREATE VIEW resolution_histogram AS
WITH bucketed AS (
  SELECT CASE WHEN px < 1000000 THEN 0 WHEN px < 2000000 THEN 1 WHEN px < 5000000 THEN 2 WHEN px < 12000000 THEN 5
              WHEN px < 24000000 THEN 12 WHEN px < 50000000 THEN 24 ELSE 50 END AS min_megapixels
  FROM (SELECT width::bigint * height AS px FROM images) AS sized
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
SELECT 'originals' AS container, count(*) AS objects, coalesce(sum(bytes), 0)::bigint AS bytes
FROM images
WHERE status NOT IN ('expired', 'deleted')
UNION ALL
SELECT 'renditions', count(*), coalesce(sum(r.bytes), 0)::bigint
FROM renditions AS r JOIN images AS i ON i.id = r.image_id
WHERE i.status NOT IN ('expired', 'deleted');

-- Images whose blobs retention will remove, per UTC day of expires_at (past days: overdue for the sweeper).
CREATE VIEW upcoming_expirations AS
SELECT (expires_at AT TIME ZONE 'UTC')::date AS day, count(*) AS images, sum(bytes)::bigint AS bytes
FROM images
WHERE status NOT IN ('expired', 'deleted')
GROUP BY 1;

GRANT SELECT ON hourly_ingest, size_histogram, resolution_histogram, failures_by_error, stored_bytes,
  upcoming_expirations TO imgpipe_analyst;
)sql";

// Portable numbers and blob_state, as SQLite's migration 3 (which also brings SQLite migration 2's views).
constexpr std::string_view kMigration3 = R"sql(
-- Nearest-rank percentiles (percentile_disc: the total_seconds at rank ceil(p * n)), as SQLite's view and the
-- dashboard compute them, so the same query gives the same numbers on both backends. Same columns and types.
CREATE OR REPLACE VIEW processing_latency AS
SELECT (finished_at AT TIME ZONE 'UTC')::date AS day, pipeline, count(*) AS runs,
       avg(total_seconds) AS avg_seconds,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY total_seconds) AS p50_seconds,
       percentile_disc(0.95) WITHIN GROUP (ORDER BY total_seconds) AS p95_seconds,
       max(total_seconds) AS max_seconds,
       percentile_disc(0.99) WITHIN GROUP (ORDER BY total_seconds) AS p99_seconds
FROM processing_runs
WHERE status = 'processed'
GROUP BY 1, 2;

-- Every image with blob_state: 'present' while its blobs can be opened, 'expired' once retention removed them or
-- its expires_at has passed (the API refuses it from then on, even before the sweeper runs), 'deleted' when an
-- admin deleted it. 'held' is reserved for images under legal hold. now() is the transaction's start.
CREATE VIEW images_with_blob_state AS
SELECT id, sha256, source, source_ref, uploader_key_id, received_at, bytes, format, content_type, width, height, frames,
       has_alpha, colour_space, has_icc, orientation, exif_make, exif_model, exif_taken_at, gps_lat, gps_lon, gps_alt,
       lens_model, software, user_metadata, pipeline, original_key, status, processed_at, expires_at, expired_at,
       error, phash, dominant_colour,
       CASE WHEN status = 'deleted' THEN 'deleted'
            WHEN status = 'expired' OR expires_at <= now() THEN 'expired'
            ELSE 'present' END AS blob_state
FROM images;

GRANT SELECT ON images_with_blob_state TO imgpipe_analyst;
)sql";


// The rollups of SQLite's migration 5 (read its comment), with the same tables, views and numbers. One difference:
// here the triggers append a row of differences instead of updating one row per hour, because concurrent writers
// would otherwise queue on that row's lock until each commit; the views sum the rows, and
// PostgresMetadataStore::CompactRollups folds them back into one row per key from time to time.
constexpr std::string_view kMigration5 = R"sql(
CREATE TABLE latency_buckets (
  bucket        integer PRIMARY KEY,
  lower_seconds double precision NOT NULL,
  upper_seconds double precision
);
WITH RECURSIVE b (bucket, lower_seconds) AS (
  SELECT 1, 0.001::double precision
  UNION ALL
  SELECT bucket + 1, lower_seconds * 1.05::double precision FROM b WHERE bucket < 399
)
INSERT INTO latency_buckets (bucket, lower_seconds, upper_seconds)
SELECT 0, 0.0, 0.001
UNION ALL
SELECT bucket, lower_seconds, CASE WHEN bucket < 399 THEN lower_seconds * 1.05::double precision END FROM b;
CREATE INDEX latency_buckets_by_lower ON latency_buckets (lower_seconds);

CREATE TABLE images_hourly (
  hour                 timestamptz NOT NULL,
  source               text NOT NULL,
  format               text NOT NULL,
  images               bigint NOT NULL DEFAULT 0,
  bytes                bigint NOT NULL DEFAULT 0,
  processed            bigint NOT NULL DEFAULT 0,
  failed               bigint NOT NULL DEFAULT 0,
  in_progress          bigint NOT NULL DEFAULT 0,
  live_images          bigint NOT NULL DEFAULT 0,
  live_bytes           bigint NOT NULL DEFAULT 0,
  live_renditions      bigint NOT NULL DEFAULT 0,
  live_rendition_bytes bigint NOT NULL DEFAULT 0,
  deleted_images       bigint NOT NULL DEFAULT 0,
  deleted_bytes        bigint NOT NULL DEFAULT 0
);
CREATE INDEX images_hourly_by_hour ON images_hourly (hour, source, format);

CREATE TABLE images_by_shape (
  format         text NOT NULL,
  size_bits      integer NOT NULL,
  min_megapixels integer NOT NULL,
  images         bigint NOT NULL DEFAULT 0,
  bytes          bigint NOT NULL DEFAULT 0
);

CREATE TABLE processing_latency_hourly (
  hour          timestamptz NOT NULL,
  pipeline      text NOT NULL,
  bucket        integer NOT NULL,
  runs          bigint NOT NULL DEFAULT 0,
  total_seconds double precision NOT NULL DEFAULT 0,
  max_seconds   double precision NOT NULL DEFAULT 0
);
CREATE INDEX processing_latency_hourly_by_hour ON processing_latency_hourly (hour, pipeline, bucket);

CREATE FUNCTION imgpipe_size_bits(bytes bigint) RETURNS integer LANGUAGE sql IMMUTABLE AS
$$ SELECT CASE WHEN bytes <= 0 THEN 0 ELSE length(ltrim(bytes::bit(64)::text, '0')) END $$;
CREATE FUNCTION imgpipe_min_megapixels(width integer, height integer) RETURNS integer LANGUAGE sql IMMUTABLE AS
$$ SELECT CASE WHEN px < 1000000 THEN 0 WHEN px < 2000000 THEN 1 WHEN px < 5000000 THEN 2 WHEN px < 12000000 THEN 5
               WHEN px < 24000000 THEN 12 WHEN px < 50000000 THEN 24 ELSE 50 END
   FROM (SELECT width::bigint * height AS px) AS sized $$;
CREATE FUNCTION imgpipe_latency_bucket(seconds double precision) RETURNS integer LANGUAGE sql STABLE AS
$$ SELECT coalesce((SELECT bucket FROM latency_buckets WHERE lower_seconds <= seconds
                    ORDER BY lower_seconds DESC LIMIT 1), 0) $$;

-- The rows already there, counted once; from here on the triggers below keep the counts.
INSERT INTO images_hourly (hour, source, format, images, bytes, processed, failed, in_progress, live_images, live_bytes,
                           live_renditions, live_rendition_bytes, deleted_images, deleted_bytes)
SELECT date_trunc('hour', i.received_at, 'UTC'), i.source, i.format, count(*), sum(i.bytes),
       count(*) FILTER (WHERE i.processed_at IS NOT NULL),
       count(*) FILTER (WHERE i.processed_at IS NULL AND i.error IS NOT NULL),
       count(*) FILTER (WHERE i.status IN ('queued', 'processing')),
       count(*) FILTER (WHERE i.status NOT IN ('expired', 'deleted')),
       coalesce(sum(i.bytes) FILTER (WHERE i.status NOT IN ('expired', 'deleted')), 0),
       coalesce(sum(r.objects) FILTER (WHERE i.status NOT IN ('expired', 'deleted')), 0),
       coalesce(sum(r.bytes) FILTER (WHERE i.status NOT IN ('expired', 'deleted')), 0),
       count(*) FILTER (WHERE i.status = 'deleted'),
       coalesce(sum(i.bytes) FILTER (WHERE i.status = 'deleted'), 0)
FROM images AS i
LEFT JOIN (SELECT image_id, count(*) AS objects, sum(bytes) AS bytes FROM renditions GROUP BY image_id) AS r
  ON r.image_id = i.id
GROUP BY 1, 2, 3;
INSERT INTO images_by_shape (format, size_bits, min_megapixels, images, bytes)
SELECT format, imgpipe_size_bits(bytes), imgpipe_min_megapixels(width, height), count(*), sum(bytes)
FROM images
GROUP BY 1, 2, 3;
INSERT INTO processing_latency_hourly (hour, pipeline, bucket, runs, total_seconds, max_seconds)
SELECT date_trunc('hour', finished_at, 'UTC'), pipeline, imgpipe_latency_bucket(total_seconds), count(*),
       sum(total_seconds), max(total_seconds)
FROM processing_runs
WHERE status = 'processed'
GROUP BY 1, 2, 3;

-- The rollups' keys and amounts come from these columns, which imgpipe never changes after the insert.
CREATE FUNCTION imgpipe_images_immutable_facts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.received_at IS DISTINCT FROM OLD.received_at OR NEW.source IS DISTINCT FROM OLD.source
     OR NEW.format IS DISTINCT FROM OLD.format OR NEW.bytes IS DISTINCT FROM OLD.bytes
     OR NEW.width IS DISTINCT FROM OLD.width OR NEW.height IS DISTINCT FROM OLD.height THEN
    RAISE EXCEPTION 'received_at, source, format, bytes, width and height of an image never change';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER images_immutable_facts BEFORE UPDATE OF received_at, source, format, bytes, width, height ON images
  FOR EACH ROW EXECUTE FUNCTION imgpipe_images_immutable_facts();

-- p_sign = 1 adds what an image row counts, -1 takes it away; p_whole = 0 leaves out images and bytes, which an update
-- of the row does not change. (Columns, not the row: a trigger on a partition passes the partition's row type.)
CREATE FUNCTION imgpipe_images_hourly_add(p_id text, p_received_at timestamptz, p_source text, p_format text,
                                          p_bytes bigint, p_status text, p_processed_at timestamptz, p_error text,
                                          p_sign integer, p_whole integer) RETURNS void LANGUAGE sql AS $$
  INSERT INTO images_hourly (hour, source, format, images, bytes, processed, failed, in_progress, live_images,
                             live_bytes, live_renditions, live_rendition_bytes, deleted_images, deleted_bytes)
  SELECT date_trunc('hour', p_received_at, 'UTC'), p_source, p_format, p_sign * p_whole, p_sign * p_whole * p_bytes,
         p_sign * (p_processed_at IS NOT NULL)::integer,
         p_sign * (p_processed_at IS NULL AND p_error IS NOT NULL)::integer,
         p_sign * (p_status IN ('queued', 'processing'))::integer,
         p_sign * l.live, p_sign * l.live * p_bytes, p_sign * l.live * rend.objects, p_sign * l.live * rend.bytes,
         p_sign * (p_status = 'deleted')::integer, p_sign * (p_status = 'deleted')::integer * p_bytes
  FROM (SELECT (p_status NOT IN ('expired', 'deleted'))::integer AS live) AS l,
       (SELECT count(*) AS objects, coalesce(sum(r.bytes), 0) AS bytes FROM renditions AS r
        WHERE r.image_id = p_id) AS rend
$$;

CREATE FUNCTION imgpipe_images_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    PERFORM imgpipe_images_hourly_add(NEW.id, NEW.received_at, NEW.source, NEW.format, NEW.bytes, NEW.status,
                                        NEW.processed_at, NEW.error, 1, 1);
    INSERT INTO images_by_shape (format, size_bits, min_megapixels, images, bytes)
    VALUES (NEW.format, imgpipe_size_bits(NEW.bytes), imgpipe_min_megapixels(NEW.width, NEW.height), 1, NEW.bytes);
  ELSIF TG_OP = 'UPDATE' THEN
    PERFORM imgpipe_images_hourly_add(OLD.id, OLD.received_at, OLD.source, OLD.format, OLD.bytes, OLD.status,
                                        OLD.processed_at, OLD.error, -1, 0);
    PERFORM imgpipe_images_hourly_add(NEW.id, NEW.received_at, NEW.source, NEW.format, NEW.bytes, NEW.status,
                                        NEW.processed_at, NEW.error, 1, 0);
  ELSE
    PERFORM imgpipe_images_hourly_add(OLD.id, OLD.received_at, OLD.source, OLD.format, OLD.bytes, OLD.status,
                                        OLD.processed_at, OLD.error, -1, 1);
    INSERT INTO images_by_shape (format, size_bits, min_megapixels, images, bytes)
    VALUES (OLD.format, imgpipe_size_bits(OLD.bytes), imgpipe_min_megapixels(OLD.width, OLD.height), -1, -OLD.bytes);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER images_rollup_insert_delete AFTER INSERT OR DELETE ON images
  FOR EACH ROW EXECUTE FUNCTION imgpipe_images_rollup();
CREATE TRIGGER images_rollup_update AFTER UPDATE OF status, processed_at, error ON images
  FOR EACH ROW EXECUTE FUNCTION imgpipe_images_rollup();

-- Renditions count toward stored bytes while their image is live.
CREATE FUNCTION imgpipe_renditions_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    INSERT INTO images_hourly (hour, source, format, live_renditions, live_rendition_bytes)
    SELECT date_trunc('hour', received_at, 'UTC'), source, format, -1, -OLD.bytes
    FROM images WHERE id = OLD.image_id AND status NOT IN ('expired', 'deleted');
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    INSERT INTO images_hourly (hour, source, format, live_renditions, live_rendition_bytes)
    SELECT date_trunc('hour', received_at, 'UTC'), source, format, 1, NEW.bytes
    FROM images WHERE id = NEW.image_id AND status NOT IN ('expired', 'deleted');
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER renditions_rollup AFTER INSERT OR DELETE OR UPDATE OF bytes, image_id ON renditions
  FOR EACH ROW EXECUTE FUNCTION imgpipe_renditions_rollup();

CREATE FUNCTION imgpipe_processing_runs_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO processing_latency_hourly (hour, pipeline, bucket, runs, total_seconds, max_seconds)
  VALUES (date_trunc('hour', NEW.finished_at, 'UTC'), NEW.pipeline, imgpipe_latency_bucket(NEW.total_seconds), 1,
          NEW.total_seconds, NEW.total_seconds);
  RETURN NULL;
END $$;
CREATE TRIGGER processing_runs_rollup AFTER INSERT ON processing_runs
  FOR EACH ROW WHEN (NEW.status = 'processed') EXECUTE FUNCTION imgpipe_processing_runs_rollup();

CREATE OR REPLACE VIEW daily_ingest AS
SELECT (hour AT TIME ZONE 'UTC')::date AS day, source, sum(images)::bigint AS images, sum(bytes)::bigint AS bytes
FROM images_hourly
GROUP BY 1, 2
HAVING sum(images) > 0;

CREATE OR REPLACE VIEW hourly_ingest AS
SELECT hour, source, sum(images)::bigint AS images, sum(bytes)::bigint AS bytes
FROM images_hourly
GROUP BY 1, 2
HAVING sum(images) > 0;

CREATE OR REPLACE VIEW format_mix AS
SELECT format, sum(images)::bigint AS images, sum(bytes)::bigint AS bytes
FROM images_by_shape
GROUP BY format
HAVING sum(images) > 0;

CREATE OR REPLACE VIEW size_histogram AS
SELECT CASE WHEN size_bits = 0 THEN 0 ELSE 1::bigint << (size_bits - 1) END AS min_bytes,
       CASE WHEN size_bits >= 63 THEN NULL ELSE 1::bigint << size_bits END AS below_bytes,
       sum(images)::bigint AS images, sum(bytes)::bigint AS bytes
FROM images_by_shape
GROUP BY size_bits
HAVING sum(images) > 0;

CREATE OR REPLACE VIEW resolution_histogram AS
SELECT min_megapixels,
       CASE min_megapixels WHEN 0 THEN 1 WHEN 1 THEN 2 WHEN 2 THEN 5 WHEN 5 THEN 12 WHEN 12 THEN 24 WHEN 24 THEN 50
       END AS below_megapixels,
       sum(images)::bigint AS images
FROM images_by_shape
GROUP BY 1
HAVING sum(images) > 0;

CREATE OR REPLACE VIEW stored_bytes AS
SELECT 'originals' AS container, coalesce(sum(live_images), 0)::bigint AS objects,
       coalesce(sum(live_bytes), 0)::bigint AS bytes
FROM images_hourly
UNION ALL
SELECT 'renditions', coalesce(sum(live_renditions), 0)::bigint, coalesce(sum(live_rendition_bytes), 0)::bigint
FROM images_hourly;

CREATE OR REPLACE VIEW processing_latency AS
WITH daily AS (
  SELECT (hour AT TIME ZONE 'UTC')::date AS day, pipeline, bucket, sum(runs) AS runs,
         sum(total_seconds) AS total_seconds, max(max_seconds) AS max_seconds
  FROM processing_latency_hourly
  GROUP BY 1, 2, 3
), cumulative AS (
  SELECT day, pipeline, runs, total_seconds, max_seconds,
         sum(runs) OVER (PARTITION BY day, pipeline ORDER BY bucket ROWS UNBOUNDED PRECEDING) AS below,
         sum(runs) OVER (PARTITION BY day, pipeline) AS n
  FROM daily
)
SELECT day, pipeline, max(n)::bigint AS runs,
       sum(total_seconds) / max(n) AS avg_seconds,
       min(CASE WHEN below * 100 >= n * 50 THEN max_seconds END) AS p50_seconds,
       min(CASE WHEN below * 100 >= n * 95 THEN max_seconds END) AS p95_seconds,
       max(max_seconds) AS max_seconds,
       min(CASE WHEN below * 100 >= n * 99 THEN max_seconds END) AS p99_seconds
FROM cumulative
GROUP BY day, pipeline
HAVING max(n) > 0;

CREATE VIEW blob_state_counts AS
WITH totals AS (
  SELECT coalesce(sum(images), 0) AS images, coalesce(sum(bytes), 0) AS bytes,
         coalesce(sum(live_images), 0) AS live_images, coalesce(sum(live_bytes), 0) AS live_bytes,
         coalesce(sum(deleted_images), 0) AS deleted_images, coalesce(sum(deleted_bytes), 0) AS deleted_bytes
  FROM images_hourly
), overdue AS (
  SELECT count(*) AS images, coalesce(sum(bytes), 0) AS bytes
  FROM images
  WHERE status NOT IN ('expired', 'deleted') AND expires_at <= now()
)
SELECT 'present' AS blob_state, (t.live_images - o.images)::bigint AS images, (t.live_bytes - o.bytes)::bigint AS bytes
FROM totals AS t, overdue AS o
UNION ALL
SELECT 'expired', (t.images - t.live_images - t.deleted_images + o.images)::bigint,
       (t.bytes - t.live_bytes - t.deleted_bytes + o.bytes)::bigint
FROM totals AS t, overdue AS o
UNION ALL
SELECT 'deleted', t.deleted_images::bigint, t.deleted_bytes::bigint
FROM totals AS t;

GRANT SELECT ON latency_buckets, images_hourly, images_by_shape, processing_latency_hourly, blob_state_counts
  TO imgpipe_analyst;
)sql";

// SQLite's migration 6: legal holds, the purge log, blob_state 'held'.
constexpr std::string_view kMigration6 = R"sql(
-- One row per hold; released_at set when it ends. At most one hold in force per image.
CREATE TABLE legal_holds (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  image_id    text COLLATE "C" NOT NULL REFERENCES image_ids (id),
  reason      text NOT NULL,
  held_by     text NOT NULL,
  held_at     timestamptz NOT NULL,
  released_by text,
  released_at timestamptz
);
CREATE UNIQUE INDEX legal_holds_in_force ON legal_holds (image_id) WHERE released_at IS NULL;

-- One row per deletion of blobs: an image's original and renditions (image_id set, what = 'image'), or the leftovers
-- of a day folder past retention (image_id NULL, what = 'container/prefix'). finished_at NULL: in progress, or
-- interrupted by a crash and redone by the next sweep.
CREATE TABLE purges (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  image_id    text COLLATE "C",
  what        text NOT NULL,
  reason      text NOT NULL,
  actor       text NOT NULL,
  started_at  timestamptz NOT NULL,
  finished_at timestamptz,
  objects     bigint NOT NULL DEFAULT 0
);
CREATE INDEX purges_by_image ON purges (image_id, id);
CREATE INDEX purges_by_started_at ON purges (started_at);

-- Images on legal hold now.
CREATE VIEW images_on_hold AS
SELECT h.image_id, h.reason, h.held_by, h.held_at, i.source, i.format, i.bytes, i.received_at, i.expires_at
FROM legal_holds AS h JOIN images AS i ON i.id = h.image_id
WHERE h.released_at IS NULL;

-- 'held': the blobs are kept by a legal hold (even past expires_at) until it is released.
CREATE OR REPLACE VIEW images_with_blob_state AS
SELECT id, sha256, source, source_ref, uploader_key_id, received_at, bytes, format, content_type, width, height, frames,
       has_alpha, colour_space, has_icc, orientation, exif_make, exif_model, exif_taken_at, gps_lat, gps_lon, gps_alt,
       lens_model, software, user_metadata, pipeline, original_key, status, processed_at, expires_at, expired_at,
       error, phash, dominant_colour,
       CASE WHEN status = 'deleted' THEN 'deleted'
            WHEN status = 'expired' THEN 'expired'
            WHEN EXISTS (SELECT 1 FROM legal_holds AS h WHERE h.image_id = images.id AND h.released_at IS NULL)
              THEN 'held'
            WHEN expires_at <= now() THEN 'expired'
            ELSE 'present' END AS blob_state
FROM images;

CREATE OR REPLACE VIEW blob_state_counts AS
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
  WHERE status NOT IN ('expired', 'deleted') AND expires_at <= now()
    AND NOT EXISTS (SELECT 1 FROM legal_holds AS h WHERE h.image_id = images.id AND h.released_at IS NULL)
)
SELECT 'present' AS blob_state, (t.live_images - h.images - o.images)::bigint AS images,
       (t.live_bytes - h.bytes - o.bytes)::bigint AS bytes
FROM totals AS t, held AS h, overdue AS o
UNION ALL
SELECT 'held', h.images::bigint, h.bytes::bigint
FROM held AS h
UNION ALL
SELECT 'expired', (t.images - t.live_images - t.deleted_images + o.images)::bigint,
       (t.bytes - t.live_bytes - t.deleted_bytes + o.bytes)::bigint
FROM totals AS t, overdue AS o
UNION ALL
SELECT 'deleted', t.deleted_images::bigint, t.deleted_bytes::bigint
FROM totals AS t;

GRANT SELECT ON legal_holds, purges, images_on_hold TO imgpipe_analyst;
)sql";

// failures_by_error read every processing run to keep the failed ones (3% of them on the benchmark's data); this
// index holds just those, with every column the view reads.
constexpr std::string_view kMigration7 = R"sql(
CREATE INDEX processing_runs_failed ON processing_runs (pipeline, error, image_id, status, finished_at)
WHERE status <> 'processed';
)sql";

// Processing scripts, as SQLite's migration 2: labels per image and script version, and the script of each run.
// A re-run of the same version replaces that version's rows of the image (MetadataStore::RecordLabels). Number 4
// was free (SQLite's 4 has no PostgreSQL counterpart); a database already at 5..7 gets it applied on its next start.
constexpr std::string_view kMigration4 = R"sql(
CREATE TABLE image_labels (
  id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  image_id       text COLLATE "C" NOT NULL REFERENCES image_ids (id),
  script_name    text NOT NULL,
  script_version text NOT NULL,
  key            text NOT NULL,
  value          text NOT NULL,
  number         double precision,
  created_at     timestamptz NOT NULL
);
CREATE INDEX image_labels_by_image ON image_labels (image_id, script_name, script_version);
CREATE INDEX image_labels_by_key ON image_labels (key, script_name, script_version);
ALTER TABLE processing_runs ADD COLUMN script_name text NOT NULL DEFAULT '';
ALTER TABLE processing_runs ADD COLUMN script_version text NOT NULL DEFAULT '';
GRANT SELECT ON image_labels TO imgpipe_analyst;
)sql";

// SQLite's migration 8, with rows of differences as in migration 5.
constexpr std::string_view kMigration8 = R"sql(
CREATE TABLE processing_latency_daily (
  day           date NOT NULL,
  pipeline      text NOT NULL,
  bucket        integer NOT NULL,
  runs          bigint NOT NULL DEFAULT 0,
  total_seconds double precision NOT NULL DEFAULT 0,
  max_seconds   double precision NOT NULL DEFAULT 0
);
CREATE INDEX processing_latency_daily_by_day ON processing_latency_daily (day, pipeline, bucket);
INSERT INTO processing_latency_daily (day, pipeline, bucket, runs, total_seconds, max_seconds)
SELECT (hour AT TIME ZONE 'UTC')::date, pipeline, bucket, sum(runs), sum(total_seconds), max(max_seconds)
FROM processing_latency_hourly
GROUP BY 1, 2, 3;
CREATE OR REPLACE FUNCTION imgpipe_processing_runs_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  b integer := imgpipe_latency_bucket(NEW.total_seconds);
BEGIN
  INSERT INTO processing_latency_hourly (hour, pipeline, bucket, runs, total_seconds, max_seconds)
  VALUES (date_trunc('hour', NEW.finished_at, 'UTC'), NEW.pipeline, b, 1, NEW.total_seconds, NEW.total_seconds);
  INSERT INTO processing_latency_daily (day, pipeline, bucket, runs, total_seconds, max_seconds)
  VALUES ((NEW.finished_at AT TIME ZONE 'UTC')::date, NEW.pipeline, b, 1, NEW.total_seconds, NEW.total_seconds);
  RETURN NULL;
END $$;

CREATE TABLE expirations_daily (
  day    date NOT NULL,
  images bigint NOT NULL DEFAULT 0,
  bytes  bigint NOT NULL DEFAULT 0
);
CREATE INDEX expirations_daily_by_day ON expirations_daily (day);
INSERT INTO expirations_daily (day, images, bytes)
SELECT (expires_at AT TIME ZONE 'UTC')::date, count(*), sum(bytes)
FROM images
WHERE status NOT IN ('expired', 'deleted')
GROUP BY 1;
CREATE FUNCTION imgpipe_images_expirations() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND NEW.expires_at IS DISTINCT FROM OLD.expires_at THEN
    RAISE EXCEPTION 'the expires_at of an image never changes';
  END IF;
  IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status NOT IN ('expired', 'deleted') THEN
    INSERT INTO expirations_daily (day, images, bytes)
    VALUES ((OLD.expires_at AT TIME ZONE 'UTC')::date, -1, -OLD.bytes);
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.status NOT IN ('expired', 'deleted') THEN
    INSERT INTO expirations_daily (day, images, bytes)
    VALUES ((NEW.expires_at AT TIME ZONE 'UTC')::date, 1, NEW.bytes);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER images_expirations_insert_delete AFTER INSERT OR DELETE ON images
  FOR EACH ROW EXECUTE FUNCTION imgpipe_images_expirations();
CREATE TRIGGER images_expirations_update AFTER UPDATE OF status, expires_at ON images
  FOR EACH ROW EXECUTE FUNCTION imgpipe_images_expirations();

CREATE OR REPLACE VIEW processing_latency AS
WITH daily AS (
  SELECT day, pipeline, bucket, sum(runs) AS runs, sum(total_seconds) AS total_seconds,
         max(max_seconds) AS max_seconds
  FROM processing_latency_daily
  GROUP BY 1, 2, 3
), cumulative AS (
  SELECT day, pipeline, runs, total_seconds, max_seconds,
         sum(runs) OVER (PARTITION BY day, pipeline ORDER BY bucket ROWS UNBOUNDED PRECEDING) AS below,
         sum(runs) OVER (PARTITION BY day, pipeline) AS n
  FROM daily
)
SELECT day, pipeline, max(n)::bigint AS runs,
       sum(total_seconds) / max(n) AS avg_seconds,
       min(CASE WHEN below * 100 >= n * 50 THEN max_seconds END) AS p50_seconds,
       min(CASE WHEN below * 100 >= n * 95 THEN max_seconds END) AS p95_seconds,
       max(max_seconds) AS max_seconds,
       min(CASE WHEN below * 100 >= n * 99 THEN max_seconds END) AS p99_seconds
FROM cumulative
GROUP BY day, pipeline
HAVING max(n) > 0;

CREATE OR REPLACE VIEW upcoming_expirations AS
SELECT day, sum(images)::bigint AS images, sum(bytes)::bigint AS bytes
FROM expirations_daily
GROUP BY day
HAVING sum(images) > 0;

GRANT SELECT ON processing_latency_daily, expirations_daily TO imgpipe_analyst;
)sql";

// One row per lease: the process that holds `name` (e.g. the retention sweeper's) until expires_at. Taken and renewed
// by an upsert that succeeds only for the holder or once the lease ran out (ON CONFLICT locks the row, so two
// processes asking at once cannot both win).
constexpr std::string_view kMigration9 = R"sql(
CREATE TABLE leases (
  name       text PRIMARY KEY,
  owner      text NOT NULL,
  expires_at timestamptz NOT NULL
);
)sql";

// As SQLite's migration 10: processing attempts started since the image was (re)queued, committed before each runs,
// so an image that kills its worker every time is given up whatever the queue remembers. A constant default is
// stored in the catalogue (no rewrite of any day's partition).
constexpr std::string_view kMigration10 = R"sql(
ALTER TABLE images ADD COLUMN processing_starts integer NOT NULL DEFAULT 0;
)sql";

}  // namespace

const std::vector<PostgresMigration>& PostgresMigrations() {
  static const std::vector<PostgresMigration> kMigrations = {
      {1, "images, renditions, runs, jobs, api keys, idempotency, analysis views", kMigration1},
      {2, "hourly ingest, size and resolution histograms, failures, stored bytes, expirations, p99", kMigration2},
      {3, "nearest-rank percentiles in processing_latency, images_with_blob_state", kMigration3},
      {4, "processing scripts: image_labels, script name and version of each run", kMigration4},
      {5, "hourly rollups kept by triggers; views over them; blob_state_counts", kMigration5},
      {6, "legal holds, the purge log, blob_state 'held', images_on_hold", kMigration6},
      {7, "a partial covering index of failed runs for failures_by_error", kMigration7},
      {8, "daily latency and expiration rollups; processing_latency and upcoming_expirations read them", kMigration8},
      {9, "leases: one holder at a time for work like the retention sweep", kMigration9},
      {10, "images.processing_starts: processing attempts started, counted before each runs", kMigration10},
  };
  return kMigrations;
}

Status ApplyPostgresMigrations(PostgresDatabase& db, const Clock& clock) {
  const std::string lock = "SELECT pg_advisory_xact_lock(" + std::to_string(kMigrationLock) + ")";
  IMGPIPE_TRY(db.Transaction([&](PgConnection& conn) -> Status {
    IMGPIPE_TRY(conn.Exec(lock));
    IMGPIPE_TRY(conn.Exec("CREATE TABLE IF NOT EXISTS schema_migrations ("
                          " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL)"));
    return Ok();
  }));
  const int known = PostgresMigrations().back().version;
  for (const PostgresMigration& migration : PostgresMigrations()) {
    IMGPIPE_TRY(db.Transaction([&](PgConnection& conn) -> Status {
      IMGPIPE_TRY(conn.Exec(lock));
      IMGPIPE_ASSIGN_OR_RETURN(
          auto applied, conn.Exec("SELECT coalesce(max(version), 0), coalesce(bool_or(version = $1), false) "
                                  "FROM schema_migrations",
                                  PgParams().Int(migration.version)));
      const std::string newest(applied.Text(0, 0));
      if (std::stoll(newest) > known) {
        return MakeError(ErrorKind::kUnavailable,
                         "database " + db.description() + " has schema version " + newest +
                             " but this imgpipe knows only up to " + std::to_string(known) +
                             "; run a newer imgpipe (or restore a backup made by this version)");
      }
      if (applied.Text(0, 1) == "t") return Ok();  // applied earlier, or by another process just now
      if (Status s = conn.ExecScript(migration.sql); !s.ok()) {
        return MakeError(s.error().kind, "applying migration " + std::to_string(migration.version) + " (" +
                                             std::string(migration.name) + ") to " + db.description() + ": " +
                                             s.error().message);
      }
      IMGPIPE_TRY(conn.Exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                            PgParams().Int(migration.version).Text(migration.name).Time(clock.Now())));
      return Ok();
    }));
  }
  return Ok();
}

}  // namespace imgpipe
