// What only the PostgreSQL backend does: day partitions, the analyst role, reconnecting, the connection pool. The
// shared behaviour is in ../metadata_store_contract_test.cpp. Needs IMGPIPE_TEST_POSTGRES_URL (skipped without it,
// failed without it when IMGPIPE_REQUIRE_POSTGRES=1).
#include "warehouse/postgres/postgres_metadata_store.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "warehouse/postgres/postgres_migrations.hpp"
#include "warehouse/postgres/postgres_test_database.hpp"

namespace imgpipe {
namespace {

using namespace std::chrono_literals;

TimePoint At(const char* rfc3339) {
  TimePoint t;
  EXPECT_TRUE(ParseRfc3339(rfc3339, &t)) << rfc3339;
  return t;
}

ImageRecord BareImage(TimePoint received, std::string source = "upload") {
  ImageRecord image;
  image.id = NewImageId(received);
  image.sha256 = std::string(64, 'b');
  image.source = std::move(source);
  image.received_at = received;
  image.bytes = 1000;
  image.format = "png";
  image.content_type = "image/png";
  image.width = 10;
  image.height = 20;
  image.original_key = "originals/" + image.id.value();
  image.expires_at = received + std::chrono::hours(24 * 7);
  return image;
}

class PostgresMetadataStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const PostgresTestEnv env = PostgresTestEnv::FromEnvironment();
    if (env.url.empty()) {
      if (env.required) FAIL() << "IMGPIPE_REQUIRE_POSTGRES=1 but " << PostgresTestEnv::kMissing;
      GTEST_SKIP() << PostgresTestEnv::kMissing;
    }
    auto database = PostgresTestDatabase::Create(env.url);
    ASSERT_TRUE(database.ok()) << "PostgreSQL at IMGPIPE_TEST_POSTGRES_URL: " << database.error().message;
    database_ = std::move(database).value();
    db_ = Open();
    ASSERT_TRUE(db_);
    store_ = std::make_unique<PostgresMetadataStore>(*db_, clock_);
    Status migrated = store_->Migrate();
    ASSERT_TRUE(migrated.ok()) << migrated.error().message;
  }

  std::unique_ptr<PostgresDatabase> Open(size_t pool_size = 8, const std::string& application_name = "imgpipe") {
    PostgresDatabase::Options options;
    options.url = database_->url() + " application_name=" + application_name;
    options.pool_size = pool_size;
    auto db = PostgresDatabase::Open(options);
    EXPECT_TRUE(db.ok()) << db.error().message;
    return db.ok() ? std::move(db).value() : nullptr;
  }

  //! Rows of `sql` run with the store's (full) privileges, as text cells ("NULL" for null).
  std::vector<std::vector<std::string>> Rows(const std::string& sql) {
    std::vector<std::vector<std::string>> rows;
    Status s = db_->Run([&](PgConnection& conn) -> Status {
      IMGPIPE_ASSIGN_OR_RETURN(auto result, conn.Exec(sql));
      for (int r = 0; r < result.Rows(); ++r) {
        rows.emplace_back();
        for (int c = 0; c < result.Columns(); ++c) {
          rows.back().push_back(result.IsNull(r, c) ? "NULL" : std::string(result.Text(r, c)));
        }
      }
      return Ok();
    });
    EXPECT_TRUE(s.ok()) << sql << ": " << s.error().message;
    return rows;
  }
  Status Exec(const std::string& sql) {
    return db_->Run([&](PgConnection& conn) { return conn.ExecScript(sql); });
  }

  QueryResult MustQuery(const std::string& sql, std::vector<std::string> params = {}, size_t max_rows = 1000) {
    auto r = store_->Query(sql, params, max_rows, 10s);
    EXPECT_TRUE(r.ok()) << sql << ": " << r.error().message;
    return r.ok() ? r.value() : QueryResult{};
  }
  std::string QueryError(const std::string& sql) {
    auto r = store_->Query(sql, {}, 10, 10s);
    EXPECT_FALSE(r.ok()) << sql;
    if (r.ok()) return "";
    EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument) << sql << ": " << r.error().message;
    return r.error().message;
  }

  FakeClock clock_{At("2026-01-10T12:00:00Z")};
  std::unique_ptr<PostgresTestDatabase> database_;
  std::unique_ptr<PostgresDatabase> db_;
  std::unique_ptr<PostgresMetadataStore> store_;
};

TEST_F(PostgresMetadataStoreTest, ImagesArePartitionedByUtcDayCreatedAhead) {
  // Migrate made today's and tomorrow's partitions.
  EXPECT_EQ(Rows("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                 "WHERE i.inhparent = 'images'::regclass ORDER BY 1"),
            (std::vector<std::vector<std::string>>{{"images_default"}, {"images_p20260110"}, {"images_p20260111"}}));

  // Rows land in the partition of their UTC day; a new day brings its partition and the next one.
  for (const char* at : {"2026-01-10T23:59:59.999Z", "2026-01-11T00:00:00Z", "2026-01-14T08:00:00Z"}) {
    ASSERT_TRUE(store_->InsertImage(BareImage(At(at)), std::nullopt).ok()) << at;
  }
  EXPECT_EQ(Rows("SELECT tableoid::regclass::text, count(*) FROM images GROUP BY 1 ORDER BY 1"),
            (std::vector<std::vector<std::string>>{
                {"images_p20260110", "1"}, {"images_p20260111", "1"}, {"images_p20260114", "1"}}));
  EXPECT_EQ(Rows("SELECT count(*) FROM pg_class WHERE oid = to_regclass('images_p20260115')"),
            (std::vector<std::vector<std::string>>{{"1"}}));

  // A lookup by id reads one partition: the plan names no other.
  ImageRecord image = BareImage(At("2026-01-11T06:00:00Z"));
  ASSERT_TRUE(store_->InsertImage(image, std::nullopt).ok());
  auto plan = Rows("EXPLAIN SELECT * FROM images WHERE id = '" + image.id.value() +
                   "' AND received_at = '2026-01-11 06:00:00+00'");
  std::string text;
  for (const auto& line : plan) text += line[0] + "\n";
  EXPECT_NE(text.find("images_p20260111"), std::string::npos) << text;
  EXPECT_EQ(text.find("images_p20260110"), std::string::npos) << text;
  EXPECT_EQ(text.find("images_default"), std::string::npos) << text;
}

TEST_F(PostgresMetadataStoreTest, ADayWhosePartitionCannotBeCreatedUsesTheDefaultPartition) {
  // A row of 2030-01-01 already sits in the default partition (written by hand), so that day's partition cannot be
  // created any more: inserts of that day still succeed, into the default partition.
  ASSERT_TRUE(Exec("INSERT INTO image_ids VALUES ('01JGZZZZZZZZZZZZZZZZZZZZZZ', '2030-01-01 10:00:00+00');"
                   "INSERT INTO images (id, sha256, source, received_at, bytes, format, content_type, width, height, "
                   "pipeline, original_key, expires_at) VALUES ('01JGZZZZZZZZZZZZZZZZZZZZZZ', 'x', 'upload', "
                   "'2030-01-01 10:00:00+00', 1, 'png', 'image/png', 1, 1, 'default', 'k', '2030-01-08 00:00:00+00')")
                  .ok());
  ImageRecord image = BareImage(At("2030-01-01T12:00:00Z"));
  Status s = store_->InsertImage(image, std::nullopt);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(store_->GetImage(image.id)->received_at, image.received_at);
  EXPECT_EQ(Rows("SELECT tableoid::regclass::text FROM images WHERE id = '" + image.id.value() + "'"),
            (std::vector<std::vector<std::string>>{{"images_default"}}));
  // The next day's partition was still made.
  EXPECT_EQ(Rows("SELECT count(*) FROM pg_class WHERE oid = to_regclass('images_p20300102')"),
            (std::vector<std::vector<std::string>>{{"1"}}));
}

TEST_F(PostgresMetadataStoreTest, MigrationsCreateTheAnalystRoleWithSelectOnlyOnAnalystData) {
  EXPECT_EQ(Rows("SELECT rolcanlogin, rolsuper FROM pg_roles WHERE rolname = 'imgpipe_analyst'"),
            (std::vector<std::vector<std::string>>{{"f", "f"}}));
  // SELECT and nothing else on the analysis tables; nothing at all on keys and stored responses.
  EXPECT_EQ(Rows("SELECT table_name, string_agg(privilege_type, ',' ORDER BY privilege_type) "
                 "FROM information_schema.role_table_grants "
                 "WHERE grantee = 'imgpipe_analyst' AND table_schema = current_schema() "
                 "GROUP BY 1 ORDER BY 1"),
            (std::vector<std::vector<std::string>>{
                {"blob_state_counts", "SELECT"},
                {"daily_ingest", "SELECT"},
                {"expirations_daily", "SELECT"},
                {"failures_by_error", "SELECT"},
                {"format_mix", "SELECT"},
                {"hourly_ingest", "SELECT"},
                {"image_ids", "SELECT"},
                {"image_labels", "SELECT"},
                {"images", "SELECT"},
                {"images_by_shape", "SELECT"},
                {"images_hourly", "SELECT"},
                {"images_on_hold", "SELECT"},
                {"images_with_blob_state", "SELECT"},
                {"jobs", "SELECT"},
                {"latency_buckets", "SELECT"},
                {"legal_holds", "SELECT"},
                {"processing_latency", "SELECT"},
                {"processing_latency_daily", "SELECT"},
                {"processing_latency_hourly", "SELECT"},
                {"processing_runs", "SELECT"},
                {"purges", "SELECT"},
                {"renditions", "SELECT"},
                {"resolution_histogram", "SELECT"},
                {"schema_migrations", "SELECT"},
                {"size_histogram", "SELECT"},
                {"stored_bytes", "SELECT"},
                {"upcoming_expirations", "SELECT"},
            }));
  EXPECT_EQ(MustQuery("SELECT current_user, current_setting('transaction_read_only')").rows_json,
            (std::vector<std::vector<std::string>>{{"\"imgpipe_analyst\"", "\"on\""}}));
}

TEST_F(PostgresMetadataStoreTest, QueryRefusalsComeFromTheDatabase) {
  ASSERT_TRUE(store_->InsertImage(BareImage(clock_.Now()), std::nullopt).ok());
  auto refused_by_database = [&](const std::string& sql) {
    const std::string message = QueryError(sql);
    EXPECT_TRUE(message.find("read-only transaction") != std::string::npos ||
                message.find("permission denied") != std::string::npos ||
                message.find("must be a superuser") != std::string::npos)
        << sql << ": " << message;
  };
  for (const char* sql : {"DELETE FROM images", "UPDATE images SET status = 'deleted'", "CREATE TABLE t (x integer)",
                          "CREATE TEMP TABLE t (x integer)", "DROP TABLE images", "TRUNCATE jobs",
                          "SELECT nextval('processing_runs_id_seq')", "SELECT pg_terminate_backend(pg_backend_pid())",
                          "SELECT lo_import('/etc/hostname')", "SELECT * FROM images FOR UPDATE"}) {
    refused_by_database(sql);
  }
  EXPECT_NE(QueryError("SELECT secret_hash FROM api_keys").find("permission denied for table api_keys"),
            std::string::npos);
  EXPECT_NE(QueryError("SELECT set_config('role', session_user, true)").find("permission denied for function "
                                                                              "set_config"),
            std::string::npos);
  EXPECT_NE(QueryError("COPY images TO '/tmp/imgpipe-evil'").find("COPY to a file"), std::string::npos);
  EXPECT_NE(QueryError("COPY (SELECT 1) TO STDOUT").find("COPY is not available"), std::string::npos);
  // The connection that saw COPY was closed, not reused half-way through the protocol.
  EXPECT_EQ(MustQuery("SELECT count(*) FROM images").rows_json[0][0], "1");
}

TEST_F(PostgresMetadataStoreTest, NothingAQueryDoesToItsSessionOutlivesIt) {
  // Session-level state an analyst query can create: an advisory lock and a held cursor.
  EXPECT_EQ(MustQuery("SELECT pg_advisory_lock(4242)").rows_json.size(), 1u);
  EXPECT_EQ(Rows("SELECT pg_try_advisory_xact_lock(4242)"), (std::vector<std::vector<std::string>>{{"t"}}));
  // SET ROLE as the only statement returns no rows (refused) and is undone with the transaction anyway.
  EXPECT_FALSE(store_->Query("SET ROLE NONE", {}, 10, 10s).ok());
  for (int i = 0; i < 3; ++i) {  // whichever pooled connection runs it
    EXPECT_EQ(MustQuery("SELECT current_user").rows_json[0][0], "\"imgpipe_analyst\"");
    EXPECT_FALSE(store_->Query("SELECT secret_hash FROM api_keys", {}, 10, 10s).ok());
  }
}

TEST_F(PostgresMetadataStoreTest, QueriesAreRefusedWhileTheRoleCanCallSetConfig) {
  ASSERT_TRUE(Exec("GRANT EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) TO PUBLIC").ok());
  auto r = store_->Query("SELECT 1", {}, 10, 10s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kUnavailable);
  EXPECT_NE(r.error().message.find("REVOKE EXECUTE ON FUNCTION pg_catalog.set_config"), std::string::npos)
      << r.error().message;
  ASSERT_TRUE(Exec("REVOKE EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) FROM PUBLIC").ok());
  EXPECT_TRUE(store_->Query("SELECT 1", {}, 10, 10s).ok());
}

TEST_F(PostgresMetadataStoreTest, QueryCellsAndParameterTypes) {
  ImageRecord image = BareImage(At("2026-01-10T11:00:00.5Z"));
  image.user_metadata_json = R"({"camera":"drone","flight":7})";
  image.has_alpha = true;
  ASSERT_TRUE(store_->InsertImage(image, std::nullopt).ok());
  auto r = MustQuery("SELECT received_at, has_alpha, '\\x00ff10'::bytea AS blob, 1.50::numeric AS n, "
                     "'NaN'::float8 AS nan, DATE '2026-01-02' AS d, $1 AS b, $2::text AS s, "
                     "convert_from('\\xc3a9'::bytea, 'UTF8') AS e FROM images",
                     {"false", "\"x\\\"y\""});
  EXPECT_EQ(r.columns, (std::vector<std::string>{"received_at", "has_alpha", "blob", "n", "nan", "d", "b", "s", "e"}));
  EXPECT_EQ(r.rows_json, (std::vector<std::vector<std::string>>{{"\"2026-01-10T11:00:00.500Z\"", "true", "\"AP8Q\"",
                                                                 "1.50", "null", "\"2026-01-02\"", "false",
                                                                 "\"x\\\"y\"", "\"é\""}}));
  // User metadata is jsonb: analysts take it apart with PostgreSQL's JSON functions.
  auto meta = MustQuery("SELECT j.key, j.value FROM images, jsonb_each_text(images.user_metadata) AS j ORDER BY j.key");
  EXPECT_EQ(meta.rows_json, (std::vector<std::vector<std::string>>{{"\"camera\"", "\"drone\""},
                                                                   {"\"flight\"", "\"7\""}}));
  // A string compared with a time is read as a time; with a number as a number.
  EXPECT_EQ(MustQuery("SELECT count(*) FROM images WHERE received_at < $1 AND bytes > $2",
                      {"\"2026-01-10T11:00:01Z\"", "\"999\""})
                .rows_json[0][0],
            "1");
  auto bad_time = store_->Query("SELECT count(*) FROM images WHERE received_at < $1", {"\"yesterday-ish\""}, 10, 10s);
  ASSERT_FALSE(bad_time.ok());
  EXPECT_EQ(bad_time.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_NE(bad_time.error().message.find("yesterday-ish"), std::string::npos) << bad_time.error().message;
}

TEST_F(PostgresMetadataStoreTest, TheMoreAnalysisViews) {
  const TimePoint day1 = At("2026-01-01T10:15:00Z");
  std::vector<ImageRecord> images;
  auto add = [&](TimePoint at, std::string source, uint64_t bytes, int width, int height) {
    ImageRecord image = BareImage(at, std::move(source));
    image.bytes = bytes;
    image.width = width;
    image.height = height;
    ASSERT_TRUE(store_->InsertImage(image, std::nullopt).ok());
    images.push_back(image);
  };
  add(day1, "upload", 1000, 1000, 800);             // 0.8 MP
  add(day1 + 10min, "upload", 1024, 4000, 3000);    // 12 MP
  add(day1 + 1h, "stream-a", 3000, 8000, 8000);     // 64 MP
  add(day1 + 1h, "upload", 0, 1, 1);

  EXPECT_EQ(MustQuery("SELECT hour, source, images, bytes FROM hourly_ingest ORDER BY hour, source").rows_json,
            (std::vector<std::vector<std::string>>{{"\"2026-01-01T10:00:00.000Z\"", "\"upload\"", "2", "2024"},
                                                   {"\"2026-01-01T11:00:00.000Z\"", "\"stream-a\"", "1", "3000"},
                                                   {"\"2026-01-01T11:00:00.000Z\"", "\"upload\"", "1", "0"}}));
  EXPECT_EQ(MustQuery("SELECT min_bytes, below_bytes, images FROM size_histogram ORDER BY min_bytes").rows_json,
            (std::vector<std::vector<std::string>>{
                {"0", "1", "1"}, {"512", "1024", "1"}, {"1024", "2048", "1"}, {"2048", "4096", "1"}}));
  EXPECT_EQ(MustQuery("SELECT min_megapixels, below_megapixels, images FROM resolution_histogram "
                      "ORDER BY min_megapixels")
                .rows_json,
            (std::vector<std::vector<std::string>>{{"0", "1", "2"}, {"12", "24", "1"}, {"50", "null", "1"}}));

  ProcessingRun run;
  run.image_id = images[0].id;
  run.pipeline = "default";
  run.started_at = day1;
  run.finished_at = day1 + 2s;
  run.status = "retrying";
  run.error = "decoder timed out";
  ASSERT_TRUE(store_->RecordFailure(images[0].id, run, false).ok());
  run.status = "failed";
  run.attempt = 2;
  ASSERT_TRUE(store_->RecordFailure(images[0].id, run, true).ok());
  run.image_id = images[1].id;
  ASSERT_TRUE(store_->RecordFailure(images[1].id, run, true).ok());
  EXPECT_EQ(MustQuery("SELECT pipeline, error, runs, images, final_failures, last_at FROM failures_by_error")
                .rows_json,
            (std::vector<std::vector<std::string>>{{"\"default\"", "\"decoder timed out\"", "3", "2", "2",
                                                    "\"2026-01-01T10:15:02.000Z\""}}));

  RenditionRecord thumb{images[2].id, "thumb-256", "r/k", "jpeg", "image/jpeg", 256, 256, 77, day1};
  run.image_id = images[2].id;
  run.status = "processed";
  run.total_seconds = 4;
  ASSERT_TRUE(store_->RecordProcessed(images[2].id, 1, "#000000", {thumb}, run).ok());
  ASSERT_TRUE(store_->MarkExpired(images[3].id, day1 + 2h).ok());
  EXPECT_EQ(MustQuery("SELECT container, objects, bytes FROM stored_bytes ORDER BY container").rows_json,
            (std::vector<std::vector<std::string>>{{"\"originals\"", "3", "5024"}, {"\"renditions\"", "1", "77"}}));
  EXPECT_EQ(MustQuery("SELECT day, images, bytes FROM upcoming_expirations ORDER BY day").rows_json,
            (std::vector<std::vector<std::string>>{{"\"2026-01-08\"", "3", "5024"}}));
  EXPECT_EQ(MustQuery("SELECT runs, p99_seconds FROM processing_latency").rows_json,
            (std::vector<std::vector<std::string>>{{"1", "4"}}));
}

TEST_F(PostgresMetadataStoreTest, ALostConnectionIsReopenedAndTheCallRetried) {
  ImageRecord image = BareImage(clock_.Now());
  ASSERT_TRUE(store_->InsertImage(image, std::nullopt).ok());
  ASSERT_TRUE(store_->Query("SELECT 1", {}, 10, 10s).ok());
  // Every other connection to this database goes, as in a server restart or a failover.
  auto kill_others = [&] {
    auto admin = PgConnection::Connect(database_->url());
    ASSERT_TRUE(admin.ok()) << admin.error().message;
    auto killed = (*admin)->Exec(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()");
    ASSERT_TRUE(killed.ok()) << killed.error().message;
    EXPECT_NE(killed->Text(0, 0), "0");
  };
  kill_others();
  auto got = store_->GetImage(image.id);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->id, image.id);

  kill_others();
  ImageRecord second = BareImage(clock_.Now() + 1s);
  Status inserted = store_->InsertImage(second, std::nullopt);
  ASSERT_TRUE(inserted.ok()) << inserted.error().message;
  EXPECT_EQ(Rows("SELECT count(*) FROM jobs"), (std::vector<std::vector<std::string>>{{"2"}}));

  kill_others();
  // Analyst queries are not retried, but their next call gets a fresh connection.
  (void)store_->Query("SELECT 1", {}, 10, 10s);
  EXPECT_TRUE(store_->Query("SELECT 1", {}, 10, 10s).ok());
}

TEST_F(PostgresMetadataStoreTest, ManyThreadsShareASmallPool) {
  auto small = Open(/*pool_size=*/2, "small_pool");
  ASSERT_TRUE(small);
  PostgresMetadataStore store(*small, clock_);
  std::vector<std::thread> threads;
  std::vector<Status> results(8);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10 && results[t].ok(); ++i) {
        results[t] = store.InsertImage(BareImage(clock_.Now() + std::chrono::seconds(t * 100 + i)), std::nullopt);
      }
    });
  }
  for (auto& t : threads) t.join();
  for (const Status& s : results) EXPECT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(Rows("SELECT count(*) FROM images"), (std::vector<std::vector<std::string>>{{"80"}}));
  // The pool never opened more than its two connections.
  const int open = std::stoi(Rows("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'small_pool'")[0][0]);
  EXPECT_GE(open, 1);
  EXPECT_LE(open, 2);
}

TEST_F(PostgresMetadataStoreTest, RollupRowsOfDifferencesFoldIntoOnePerKeyWhileWritersGoOn) {
  // Triggers append a row per change (no row lock for concurrent uploads to queue on); compaction folds them.
  const TimePoint hour = At("2026-01-10T09:00:00Z");
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(store_->InsertImage(BareImage(hour + std::chrono::minutes(i)), std::nullopt).ok());
  }
  EXPECT_EQ(Rows("SELECT count(*), sum(images) FROM images_hourly"),
            (std::vector<std::vector<std::string>>{{"5", "5"}}));
  ASSERT_TRUE(store_->CompactRollups().ok());
  EXPECT_EQ(Rows("SELECT count(*), sum(images) FROM images_hourly"),
            (std::vector<std::vector<std::string>>{{"1", "5"}}));

  // Two compactors (two serve processes) and two writers at once: nothing counted twice, nothing lost.
  auto other_db = Open(2, "imgpipe-other");
  ASSERT_TRUE(other_db);
  PostgresMetadataStore other(*other_db, clock_);
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (MetadataStore* store : {static_cast<MetadataStore*>(store_.get()), static_cast<MetadataStore*>(&other)}) {
    threads.emplace_back([&, store] {
      while (!stop) {
        if (!store->CompactRollups().ok()) ++failures;
      }
    });
  }
  for (int w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] {
      for (int i = 0; i < 50; ++i) {
        if (!store_->InsertImage(BareImage(hour + std::chrono::seconds(w * 1000 + i)), std::nullopt).ok()) ++failures;
      }
    });
  }
  for (size_t i = 2; i < threads.size(); ++i) threads[i].join();
  stop = true;
  threads[0].join();
  threads[1].join();
  EXPECT_EQ(failures.load(), 0);
  ASSERT_TRUE(store_->CompactRollups().ok());
  EXPECT_EQ(Rows("SELECT count(*), sum(images), sum(live_images) FROM images_hourly"),
            (std::vector<std::vector<std::string>>{{"1", "105", "105"}}));
  EXPECT_EQ(Rows("SELECT count(*) FROM images"), (std::vector<std::vector<std::string>>{{"105"}}));
}

}  // namespace
}  // namespace imgpipe
