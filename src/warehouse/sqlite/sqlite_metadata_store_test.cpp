#include "warehouse/sqlite/sqlite_metadata_store.hpp"

#include <gtest/gtest.h>

#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <stdexcept>
#include <thread>

#include "warehouse/sqlite/migrations.hpp"

namespace imgpipe {
namespace {

// Behaviour every backend shares is tested once, in ../metadata_store_contract_test.cpp, which runs on SQLite
// always. This file keeps what is SQLite's own: the file, WAL and sync settings, its migrations, its messages, group
// commit, and the cases whose SQL only SQLite speaks.

using namespace std::chrono_literals;

TimePoint At(const char* rfc3339) {
  TimePoint t;
  EXPECT_TRUE(ParseRfc3339(rfc3339, &t)) << rfc3339;
  return t;
}

class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "imgpipe-warehouse-XXXXXX").string();
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

ImageRecord FullImage(TimePoint received) {
  ImageRecord image;
  image.id = NewImageId(received);
  image.sha256 = std::string(64, 'a');
  image.source = "upload";
  image.source_ref = "client-ref-1";
  image.uploader_key_id = "k_uploader";
  image.received_at = received;
  image.bytes = 123456;
  image.format = "jpeg";
  image.content_type = "image/jpeg";
  image.width = 4032;
  image.height = 3024;
  image.frames = 1;
  image.has_alpha = true;
  image.colour_space = "srgb";
  image.has_icc = true;
  image.exif.make = "Canon";
  image.exif.model = "EOS R5";
  image.exif.taken_at = "2025-12-31T23:59:58+01:00";
  image.exif.gps_lat = 48.858222;
  image.exif.gps_lon = -2.2945;
  image.exif.gps_alt = 35.5;
  image.exif.orientation = 6;
  image.exif.lens_model = "RF24-70mm F2.8 L IS USM";
  image.exif.software = "Firmware 1.8.1";
  image.user_metadata_json = R"({"album":"été","n":3})";
  image.pipeline = "default";
  image.original_key = "originals/" + image.id.value();
  image.status = ImageStatus::kQueued;
  image.expires_at = received + std::chrono::hours(24 * 7);
  return image;
}

//! A minimal image: only required fields, every optional empty.
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

class SqliteMetadataStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A nested folder that does not exist yet: Open creates it.
    path_ = dir_.path() / "data" / "nested" / "warehouse.db";
    auto db = SqliteDatabase::Open(path_);
    ASSERT_TRUE(db.ok()) << db.error().message;
    db_ = std::move(db).value();
    store_ = std::make_unique<SqliteMetadataStore>(*db_, clock_);
    Status migrated = store_->Migrate();
    ASSERT_TRUE(migrated.ok()) << migrated.error().message;
  }

  int64_t Count(const std::string& sql) {
    int64_t n = -1;
    Status s = db_->Read([&](SqliteConnection& conn) -> Status {
      IMGPIPE_ASSIGN_OR_RETURN(auto stmt, conn.Prepare(sql));
      IMGPIPE_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (row) n = stmt.Int(0);
      return Ok();
    });
    EXPECT_TRUE(s.ok()) << s.error().message;
    return n;
  }

  QueryResult MustQuery(const std::string& sql, std::vector<std::string> params = {}, size_t max_rows = 1000) {
    auto r = store_->Query(sql, params, max_rows, 10s);
    EXPECT_TRUE(r.ok()) << sql << ": " << r.error().message;
    return r.ok() ? r.value() : QueryResult{};
  }

  ProcessingRun Run(const ImageId& id, std::string status, double total, TimePoint finished, int attempt = 1) {
    ProcessingRun run;
    run.image_id = id;
    run.pipeline = "default";
    run.attempt = attempt;
    run.started_at = finished - 2s;
    run.finished_at = finished;
    run.status = std::move(status);
    run.decode_seconds = total / 4;
    run.encode_seconds = total / 2;
    run.total_seconds = total;
    return run;
  }

  TempDir dir_;
  std::filesystem::path path_;
  FakeClock clock_{At("2026-01-10T12:00:00Z")};
  std::unique_ptr<SqliteDatabase> db_;
  std::unique_ptr<SqliteMetadataStore> store_;
};

TEST_F(SqliteMetadataStoreTest, OpenCreatesFolderAndUsesWalWithFullSync) {
  EXPECT_TRUE(std::filesystem::exists(path_));
  Status s = db_->Read([](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto mode, conn.Prepare("PRAGMA journal_mode"));
    IMGPIPE_ASSIGN_OR_RETURN(bool row, mode.Step());
    EXPECT_TRUE(row);
    EXPECT_EQ(mode.Text(0), "wal");
    return Ok();
  });
  ASSERT_TRUE(s.ok()) << s.error().message;
  s = db_->Write([](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto sync, conn.Prepare("PRAGMA synchronous"));
    IMGPIPE_ASSIGN_OR_RETURN(bool row, sync.Step());
    EXPECT_TRUE(row);
    EXPECT_EQ(sync.Int(0), 2);  // FULL
    IMGPIPE_ASSIGN_OR_RETURN(auto fk, conn.Prepare("PRAGMA foreign_keys"));
    IMGPIPE_ASSIGN_OR_RETURN(row, fk.Step());
    EXPECT_EQ(fk.Int(0), 1);
    return Ok();
  });
  ASSERT_TRUE(s.ok()) << s.error().message;
}

TEST_F(SqliteMetadataStoreTest, MigrateIsIdempotentAndKeepsData) {
  const auto applied = static_cast<int64_t>(SqliteMigrations().size());
  EXPECT_EQ(Count("SELECT count(*) FROM schema_migrations"), applied);
  ImageRecord image = BareImage(clock_.Now());
  ASSERT_TRUE(store_->InsertImage(image, std::nullopt).ok());
  auto first = MustQuery("SELECT version, applied_at FROM schema_migrations ORDER BY version");

  clock_.Advance(1h);
  for (int i = 0; i < 2; ++i) {
    Status s = store_->Migrate();
    ASSERT_TRUE(s.ok()) << s.error().message;
  }
  EXPECT_EQ(Count("SELECT count(*) FROM schema_migrations"), applied);
  EXPECT_EQ(MustQuery("SELECT version, applied_at FROM schema_migrations ORDER BY version").rows_json,
            first.rows_json);
  EXPECT_TRUE(store_->GetImage(image.id).ok());
}

TEST_F(SqliteMetadataStoreTest, MigrateRefusesADatabaseFromANewerVersion) {
  ASSERT_TRUE(db_->Write([](SqliteConnection& conn) {
                   return conn.Exec("INSERT INTO schema_migrations VALUES (999, 'future', '2030-01-01T00:00:00.000Z')");
                 }).ok());
  Status s = store_->Migrate();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().kind, ErrorKind::kUnavailable);
  EXPECT_NE(s.error().message.find("999"), std::string::npos) << s.error().message;
}

TEST_F(SqliteMetadataStoreTest, InsertAndGetRoundTripEveryField) {
  ImageRecord full = FullImage(At("2026-01-10T11:59:59.123Z"));
  full.status = ImageStatus::kProcessed;
  full.processed_at = At("2026-01-10T12:00:01.5Z");
  full.expired_at = At("2026-01-17T12:00:02Z");
  full.error = "earlier failure";
  full.phash = 0xfedcba9876543210ULL;  // high bit set: must survive as unsigned
  full.dominant_colour = "#a1b2c3";
  ASSERT_TRUE(store_->InsertImage(full, std::nullopt).ok());

  auto got = store_->GetImage(full.id);
  ASSERT_TRUE(got.ok()) << got.error().message;
  const ImageRecord& g = got.value();
  EXPECT_EQ(g.id, full.id);
  EXPECT_EQ(g.sha256, full.sha256);
  EXPECT_EQ(g.source, full.source);
  EXPECT_EQ(g.source_ref, full.source_ref);
  EXPECT_EQ(g.uploader_key_id, full.uploader_key_id);
  EXPECT_EQ(g.received_at, full.received_at);
  EXPECT_EQ(g.bytes, full.bytes);
  EXPECT_EQ(g.format, full.format);
  EXPECT_EQ(g.content_type, full.content_type);
  EXPECT_EQ(g.width, full.width);
  EXPECT_EQ(g.height, full.height);
  EXPECT_EQ(g.frames, full.frames);
  EXPECT_EQ(g.has_alpha, full.has_alpha);
  EXPECT_EQ(g.colour_space, full.colour_space);
  EXPECT_EQ(g.has_icc, full.has_icc);
  EXPECT_EQ(g.exif.make, full.exif.make);
  EXPECT_EQ(g.exif.model, full.exif.model);
  EXPECT_EQ(g.exif.taken_at, full.exif.taken_at);
  EXPECT_EQ(g.exif.gps_lat, full.exif.gps_lat);
  EXPECT_EQ(g.exif.gps_lon, full.exif.gps_lon);
  EXPECT_EQ(g.exif.gps_alt, full.exif.gps_alt);
  EXPECT_EQ(g.exif.orientation, full.exif.orientation);
  EXPECT_EQ(g.exif.lens_model, full.exif.lens_model);
  EXPECT_EQ(g.exif.software, full.exif.software);
  EXPECT_EQ(g.user_metadata_json, full.user_metadata_json);
  EXPECT_EQ(g.pipeline, full.pipeline);
  EXPECT_EQ(g.original_key, full.original_key);
  EXPECT_EQ(g.status, full.status);
  EXPECT_EQ(g.processed_at, full.processed_at);
  EXPECT_EQ(g.expires_at, full.expires_at);
  EXPECT_EQ(g.expired_at, full.expired_at);
  EXPECT_EQ(g.error, full.error);
  EXPECT_EQ(g.phash, full.phash);
  EXPECT_EQ(g.dominant_colour, full.dominant_colour);

  // Analysts read the public columns by name, with readable values.
  auto row = MustQuery("SELECT id, status, format, width, height, bytes, exif_make, exif_model, exif_taken_at, "
                       "gps_lat, gps_lon, orientation, received_at, phash FROM images WHERE id = ?1",
                       {"\"" + full.id.value() + "\""});
  ASSERT_EQ(row.rows_json.size(), 1u);
  EXPECT_EQ(row.rows_json[0],
            (std::vector<std::string>{"\"" + full.id.value() + "\"", "\"processed\"", "\"jpeg\"", "4032", "3024",
                                      "123456", "\"Canon\"", "\"EOS R5\"", "\"2025-12-31T23:59:58+01:00\"",
                                      "48.858222", "-2.2945", "6", "\"2026-01-10T11:59:59.123Z\"",
                                      "\"fedcba9876543210\""}));

  ImageRecord bare = BareImage(clock_.Now());
  ASSERT_TRUE(store_->InsertImage(bare, std::nullopt).ok());
  auto b = store_->GetImage(bare.id);
  ASSERT_TRUE(b.ok()) << b.error().message;
  EXPECT_FALSE(b->exif.make || b->exif.model || b->exif.taken_at || b->exif.gps_lat || b->exif.gps_lon ||
               b->exif.gps_alt || b->exif.orientation || b->exif.lens_model || b->exif.software);
  EXPECT_FALSE(b->processed_at || b->expired_at || b->error || b->phash || b->dominant_colour);
  EXPECT_EQ(b->user_metadata_json, "{}");
  EXPECT_EQ(b->status, ImageStatus::kQueued);

  auto missing = store_->GetImage(NewImageId(clock_.Now()));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().kind, ErrorKind::kNotFound);
}

TEST_F(SqliteMetadataStoreTest, ListImagesPaginatesWithFiltersWithoutGapsOrDuplicates) {
  const TimePoint base = At("2026-01-01T00:00:00Z");
  std::vector<ImageRecord> all;  // oldest first
  for (int i = 0; i < 120; ++i) {
    ImageRecord image = BareImage(base + std::chrono::seconds(i), i % 2 ? "stream-a" : "upload");
    if (i % 3 == 0) image.status = ImageStatus::kProcessed;
    ASSERT_TRUE(store_->InsertImage(image, std::nullopt).ok());
    all.push_back(image);
  }

  auto walk = [&](ImageFilter filter) {
    std::vector<std::string> ids;
    for (int pages = 0; pages < 100; ++pages) {
      auto page = store_->ListImages(filter);
      EXPECT_TRUE(page.ok()) << page.error().message;
      if (!page.ok()) break;
      EXPECT_LE(page->items.size(), filter.limit);
      for (const auto& image : page->items) ids.push_back(image.id.value());
      if (page->next_cursor.empty()) break;
      EXPECT_EQ(page->next_cursor, page->items.back().id.value());
      filter.after_id = page->next_cursor;
    }
    return ids;
  };
  auto expected = [&](auto keep, bool newest_first) {
    std::vector<std::string> ids;
    for (const auto& image : all) {
      if (keep(image)) ids.push_back(image.id.value());
    }
    if (newest_first) std::reverse(ids.begin(), ids.end());
    return ids;
  };

  ImageFilter newest;
  newest.limit = 25;
  EXPECT_EQ(walk(newest), expected([](const ImageRecord&) { return true; }, true));

  ImageFilter oldest;
  oldest.limit = 7;
  oldest.newest_first = false;
  EXPECT_EQ(walk(oldest), expected([](const ImageRecord&) { return true; }, false));

  // Exactly one full page: no cursor, since there is nothing more.
  ImageFilter exact;
  exact.limit = 120;
  auto one = store_->ListImages(exact);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->items.size(), 120u);
  EXPECT_TRUE(one->next_cursor.empty());

  ImageFilter filtered;
  filtered.limit = 10;
  filtered.source = "stream-a";
  filtered.received_from = base + 20s;
  filtered.received_to = base + 80s;
  auto in_range = [&](const ImageRecord& image) {
    return image.source == "stream-a" && image.received_at >= base + 20s && image.received_at < base + 80s;
  };
  auto got = walk(filtered);
  EXPECT_EQ(got.size(), 30u);
  EXPECT_EQ(got, expected(in_range, true));

  ImageFilter processed;
  processed.limit = 9;
  processed.status = ImageStatus::kProcessed;
  processed.newest_first = false;
  auto processed_ids = walk(processed);
  EXPECT_EQ(processed_ids.size(), 40u);
  EXPECT_EQ(processed_ids, expected([](const ImageRecord& i) { return i.status == ImageStatus::kProcessed; }, false));
  EXPECT_EQ(std::set<std::string>(processed_ids.begin(), processed_ids.end()).size(), processed_ids.size());
}

TEST_F(SqliteMetadataStoreTest, QueryReturnsJsonCellsAndBindsParameters) {
  auto r = MustQuery("SELECT ?1 AS i, ?2 AS s, ?3 AS n, ?4 AS b, ?5 AS d, x'00ff10' AS blob, 'say \"hi\"\n' AS q, "
                     "CAST(x'ff' AS TEXT) AS bad_utf8",
                     {"42", "\"héllo\"", "null", "true", "2.5"});
  EXPECT_EQ(r.columns, (std::vector<std::string>{"i", "s", "n", "b", "d", "blob", "q", "bad_utf8"}));
  ASSERT_EQ(r.rows_json.size(), 1u);
  EXPECT_EQ(r.rows_json[0], (std::vector<std::string>{"42", "\"héllo\"", "null", "1", "2.5", "\"AP8Q\"",
                                                     "\"say \\\"hi\\\"\\n\"", "\"\\ufffd\""}));
  EXPECT_FALSE(r.truncated);

  auto wrong_count = store_->Query("SELECT ?1, ?2", {"1"}, 10, 10s);
  ASSERT_FALSE(wrong_count.ok());
  EXPECT_EQ(wrong_count.error().kind, ErrorKind::kInvalidArgument);
  auto not_scalar = store_->Query("SELECT ?1", {"[1,2]"}, 10, 10s);
  ASSERT_FALSE(not_scalar.ok());
  EXPECT_EQ(not_scalar.error().kind, ErrorKind::kInvalidArgument);
  auto bad_json = store_->Query("SELECT ?1", {"{"}, 10, 10s);
  EXPECT_EQ(bad_json.error().kind, ErrorKind::kInvalidArgument);

  auto unknown = store_->Query("SELECT * FROM imagez", {}, 10, 10s);
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_NE(unknown.error().message.find("no such table: imagez"), std::string::npos) << unknown.error().message;

  auto empty = store_->Query("  -- nothing\n", {}, 10, 10s);
  EXPECT_EQ(empty.error().kind, ErrorKind::kInvalidArgument);
}

TEST_F(SqliteMetadataStoreTest, QueryIsReadOnlyWhateverTheSql) {
  ImageRecord image = BareImage(clock_.Now());
  ASSERT_TRUE(store_->InsertImage(image, std::nullopt).ok());
  const std::vector<std::string> writes = {
      "INSERT INTO images (id) VALUES ('x')",
      "UPDATE images SET status = 'deleted'",
      "DELETE FROM images",
      "DROP TABLE images",
      "DROP VIEW format_mix",
      "CREATE TABLE t (x)",
      "CREATE TEMP TABLE t (x)",
      "ATTACH DATABASE 'other.db' AS other",
      "PRAGMA journal_mode = DELETE",
      "PRAGMA user_version = 7",
      "BEGIN",
      "VACUUM",
      "WITH x AS (SELECT 1) DELETE FROM jobs",
      "REPLACE INTO jobs (image_id, pipeline, not_before, enqueued_at) VALUES ('a', 'b', 'c', 'd')",
      "SELECT load_extension('/tmp/evil')",
  };
  for (const auto& sql : writes) {
    auto r = store_->Query(sql, {}, 10, 10s);
    ASSERT_FALSE(r.ok()) << sql;
    EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument) << sql;
    // SQLite's own words: "not authorized" (or "authorization denied" for VACUUM).
    const std::string& message = r.error().message;
    EXPECT_TRUE(message.find("not authorized") != std::string::npos ||
                message.find("authorization denied") != std::string::npos)
        << sql << ": " << message;
  }
  // Table-valued functions need an authorizer exception for the schema table; writing to it still fails.
  for (std::string sql : {"UPDATE sqlite_master SET sql = 'x'", "UPDATE sqlite_schema SET name = 'x'"}) {
    auto r = store_->Query(sql, {}, 10, 10s);
    ASSERT_FALSE(r.ok()) << sql;
    EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument) << sql;
  }
  EXPECT_EQ(MustQuery("SELECT count(*) FROM pragma_table_info('images') WHERE name = 'exif_make'").rows_json[0][0],
            "1");
  auto two = store_->Query("SELECT 1; DELETE FROM images", {}, 10, 10s);
  ASSERT_FALSE(two.ok());
  EXPECT_EQ(two.error().kind, ErrorKind::kInvalidArgument);

  EXPECT_EQ(Count("SELECT count(*) FROM images"), 1);
  EXPECT_EQ(Count("SELECT count(*) FROM jobs"), 1);
  EXPECT_EQ(store_->GetImage(image.id)->status, ImageStatus::kQueued);
  EXPECT_EQ(MustQuery("SELECT count(*) FROM format_mix").rows_json[0][0], "1");

  // The connection itself is read-only: even without the authorizer, a write fails with the database's message.
  Status raw = db_->RunUntrusted([](SqliteConnection& conn) { return conn.Exec("DELETE FROM images"); });
  ASSERT_FALSE(raw.ok());
  EXPECT_NE(raw.error().message.find("readonly database"), std::string::npos) << raw.error().message;
  EXPECT_EQ(Count("SELECT count(*) FROM images"), 1);
}

TEST_F(SqliteMetadataStoreTest, QueryCannotReadKeysOrStoredResponses) {
  ASSERT_TRUE(store_->CreateApiKey({"k_1", "secret-hash", Role::kAdmin, "", clock_.Now(), std::nullopt}).ok());
  const std::vector<std::pair<std::string, std::string>> reads = {
      {"SELECT secret_hash FROM api_keys", "api_keys"},
      {"SELECT count(*) FROM api_keys", "api_keys"},
      {"SELECT * FROM API_KEYS", "api_keys"},
      {"WITH k AS (SELECT * FROM api_keys) SELECT * FROM k", "api_keys"},
      {"SELECT id FROM images WHERE id IN (SELECT id FROM api_keys)", "api_keys"},
      {"SELECT * FROM main.idempotency", "idempotency"},
      {"SELECT response_json FROM idempotency", "idempotency"},
  };
  for (const auto& [sql, table] : reads) {
    auto r = store_->Query(sql, {}, 10, 10s);
    ASSERT_FALSE(r.ok()) << sql;
    EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument) << sql;
    EXPECT_NE(r.error().message.find(table), std::string::npos) << sql << ": " << r.error().message;
    EXPECT_EQ(r.error().message.find("secret-hash"), std::string::npos);
  }
  // The schema itself is readable, so analysts can discover tables and columns.
  auto tables = MustQuery("SELECT name FROM sqlite_schema WHERE type = 'table' AND name = 'images'");
  EXPECT_EQ(tables.rows_json.size(), 1u);
  // User metadata can be taken apart with the JSON table-valued functions.
  ImageRecord image = BareImage(clock_.Now());
  image.user_metadata_json = R"({"camera":"drone","flight":7})";
  ASSERT_TRUE(store_->InsertImage(image, std::nullopt).ok());
  auto meta = MustQuery("SELECT j.key, j.value FROM images, json_each(images.user_metadata) AS j ORDER BY j.key");
  EXPECT_EQ(meta.rows_json, (std::vector<std::vector<std::string>>{{"\"camera\"", "\"drone\""},
                                                                   {"\"flight\"", "7"}}));
}

TEST_F(SqliteMetadataStoreTest, QueryCapsRows) {
  const std::string sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 50) SELECT x FROM c";
  auto capped = store_->Query(sql, {}, 10, 10s);
  ASSERT_TRUE(capped.ok());
  EXPECT_EQ(capped->rows_json.size(), 10u);
  EXPECT_TRUE(capped->truncated);
  EXPECT_EQ(capped->rows_json[9][0], "10");
  auto all = store_->Query(sql, {}, 50, 10s);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->rows_json.size(), 50u);
  EXPECT_FALSE(all->truncated);
}

TEST_F(SqliteMetadataStoreTest, AnalysisViews) {
  const TimePoint day1 = At("2026-01-01T10:00:00Z");
  const TimePoint day2 = At("2026-01-02T10:00:00Z");
  std::vector<ImageRecord> images;
  auto add = [&](TimePoint at, std::string source, std::string format, uint64_t bytes) {
    ImageRecord image = BareImage(at, std::move(source));
    image.format = std::move(format);
    image.bytes = bytes;
    ASSERT_TRUE(store_->InsertImage(image, std::nullopt).ok());
    images.push_back(image);
  };
  add(day1, "upload", "jpeg", 100);
  add(day1 + 1s, "upload", "png", 200);
  add(day1 + 2s, "stream-a", "jpeg", 400);
  add(day2, "upload", "jpeg", 800);

  auto ingest = MustQuery("SELECT day, source, images, bytes FROM daily_ingest ORDER BY day, source");
  EXPECT_EQ(ingest.rows_json, (std::vector<std::vector<std::string>>{
                                  {"\"2026-01-01\"", "\"stream-a\"", "1", "400"},
                                  {"\"2026-01-01\"", "\"upload\"", "2", "300"},
                                  {"\"2026-01-02\"", "\"upload\"", "1", "800"},
                              }));
  auto mix = MustQuery("SELECT format, images, bytes FROM format_mix ORDER BY format");
  EXPECT_EQ(mix.rows_json, (std::vector<std::vector<std::string>>{{"\"jpeg\"", "3", "1300"},
                                                                  {"\"png\"", "1", "200"}}));

  // 20 successful runs of 1..20 s on day 1 (in shuffled order), one failed run that must not count.
  for (int i = 0; i < 20; ++i) {
    int seconds = (i * 7) % 20 + 1;
    ProcessingRun run = Run(images[0].id, "processed", seconds, day1 + std::chrono::minutes(i));
    ASSERT_TRUE(store_->RecordFailure(images[0].id, run, false).ok());  // appends the run as given
  }
  ProcessingRun slow_failure = Run(images[0].id, "failed", 1000, day1);
  ASSERT_TRUE(store_->RecordFailure(images[0].id, slow_failure, false).ok());
  ASSERT_TRUE(store_->RecordFailure(images[3].id, Run(images[3].id, "processed", 3, day2), false).ok());

  auto latency = MustQuery("SELECT day, pipeline, runs, avg_seconds, p50_seconds, p95_seconds, max_seconds "
                           "FROM processing_latency ORDER BY day");
  EXPECT_EQ(latency.rows_json, (std::vector<std::vector<std::string>>{
                                   {"\"2026-01-01\"", "\"default\"", "20", "10.5", "10", "19", "20"},
                                   {"\"2026-01-02\"", "\"default\"", "1", "3", "3", "3", "3"},
                               }));
}

TEST_F(SqliteMetadataStoreTest, ASecondDatabaseOnTheSameFileSeesCommitsAndCanWrite) {
  auto other = SqliteDatabase::Open(path_);  // as `imgpipe keys create` would, while serve runs
  ASSERT_TRUE(other.ok()) << other.error().message;
  SqliteMetadataStore other_store(**other, clock_);
  ASSERT_TRUE(other_store.Migrate().ok());

  ImageRecord image = BareImage(clock_.Now());
  ASSERT_TRUE(store_->InsertImage(image, std::nullopt).ok());
  EXPECT_EQ(other_store.GetImage(image.id)->sha256, image.sha256);

  // While this process holds a read transaction open, the other one creates a key; new reads here see it.
  Status s = db_->Read([&](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto stmt, conn.Prepare("SELECT count(*) FROM images"));
    IMGPIPE_TRY(stmt.Run());
    return other_store.CreateApiKey({"k_cli", "cli-hash", Role::kUploader, "cli", clock_.Now(), std::nullopt});
  });
  ASSERT_TRUE(s.ok()) << s.error().message;
  auto key = store_->FindApiKeyByHash("cli-hash");
  ASSERT_TRUE(key.ok()) << key.error().message;
  EXPECT_EQ(key->role, Role::kUploader);
  EXPECT_EQ(store_->CountApiKeys().value(), 1);
}

TEST_F(SqliteMetadataStoreTest, WriteRollsBackOnErrorAndRefusesNesting) {
  Status s = db_->Write([&](SqliteConnection& conn) -> Status {
    IMGPIPE_TRY(conn.Exec("INSERT INTO api_keys (id, secret_hash, role, created_at) VALUES ('k', 'h', 'admin', 'x')"));
    return MakeError(ErrorKind::kConflict, "changed my mind");
  });
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message, "changed my mind");
  EXPECT_EQ(store_->CountApiKeys().value(), 0);

  Status nested = db_->Write([&](SqliteConnection&) { return db_->Write([](SqliteConnection&) { return Ok(); }); });
  ASSERT_FALSE(nested.ok());
  EXPECT_EQ(nested.error().kind, ErrorKind::kInternal);
  // The writer is usable afterwards.
  EXPECT_TRUE(store_->CreateApiKey({"k_2", "h2", Role::kReader, "", clock_.Now(), std::nullopt}).ok());
}

TEST_F(SqliteMetadataStoreTest, ConcurrentWritesCommitTogetherButFailAlone) {
  // While the first write holds the writer, the others queue up and are committed as one batch; a failing or
  // throwing caller must undo only its own changes.
  auto insert_key = [&](SqliteConnection& conn, int i) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(
        auto stmt, conn.Prepare("INSERT INTO api_keys (id, secret_hash, role, created_at) VALUES (?1, ?1, 'reader', 'x')"));
    stmt.BindText(1, "k_" + std::to_string(i));
    return stmt.Run();
  };
  std::vector<std::thread> threads;
  std::vector<Status> results(16);
  threads.emplace_back([&] {
    results[0] = db_->Write([&](SqliteConnection& conn) -> Status {
      std::this_thread::sleep_for(50ms);  // lets the others queue behind this write
      return insert_key(conn, 0);
    });
  });
  for (int i = 1; i < 16; ++i) {
    threads.emplace_back([&, i] {
      results[i] = db_->Write([&, i](SqliteConnection& conn) -> Status {
        IMGPIPE_TRY(insert_key(conn, i));
        if (i % 5 == 0) throw std::runtime_error("boom");
        if (i % 2 == 1) return MakeError(ErrorKind::kConflict, "odd ones fail");
        return Ok();
      });
    });
  }
  for (auto& t : threads) t.join();
  std::set<std::string> expected;
  for (int i = 0; i < 16; ++i) {
    if (i % 5 == 0 && i > 0) {
      ASSERT_FALSE(results[i].ok());
      EXPECT_EQ(results[i].error().kind, ErrorKind::kInternal);
      EXPECT_NE(results[i].error().message.find("boom"), std::string::npos);
    } else if (i % 2 == 1) {
      ASSERT_FALSE(results[i].ok());
      EXPECT_EQ(results[i].error().kind, ErrorKind::kConflict);
    } else {
      EXPECT_TRUE(results[i].ok()) << i << ": " << results[i].error().message;
      expected.insert("\"k_" + std::to_string(i) + "\"");
    }
  }
  std::set<std::string> stored;
  Status s = db_->Read([&](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto stmt, conn.Prepare("SELECT id FROM api_keys"));
    while (true) {
      IMGPIPE_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) return Ok();
      stored.insert("\"" + stmt.Text(0) + "\"");
    }
  });
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(stored, expected);  // {0, 2, 4, 6, 8, 12, 14}
}

}  // namespace
}  // namespace imgpipe
