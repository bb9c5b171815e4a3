// The MetadataStore contract: one suite, the same assertions on every backend. SQLite always runs; PostgreSQL runs
// when IMGPIPE_TEST_POSTGRES_URL names a server (each test gets a fresh database there), is skipped when it does not,
// and fails when IMGPIPE_REQUIRE_POSTGRES=1 (as under scripts/test) and the server is missing or unreachable.
// Behaviour only one backend has is tested beside it (sqlite/, postgres/).
#include <gtest/gtest.h>

#include <stdlib.h>

#include <boost/json/parse.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <functional>
#include <mutex>
#include <set>
#include <thread>

#include "warehouse/postgres/postgres_metadata_store.hpp"
#include "warehouse/postgres/postgres_migrations.hpp"
#include "warehouse/postgres/postgres_test_database.hpp"
#include "warehouse/sqlite/migrations.hpp"
#include "warehouse/sqlite/sqlite_metadata_store.hpp"

namespace imgpipe {
namespace {

using namespace std::chrono_literals;

TimePoint At(const char* rfc3339) {
  TimePoint t;
  EXPECT_TRUE(ParseRfc3339(rfc3339, &t)) << rfc3339;
  return t;
}

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

//! One backend under test: a migrated store on a fresh database, and privileged access to that database for
//! assertions (the store's own Query is read-only and cannot see everything).
class Backend {
 public:
  virtual ~Backend() = default;
  virtual MetadataStore& store() = 0;
  //! Another store on the same database, as a second process (e.g. `imgpipe keys`) would open it.
  virtual std::unique_ptr<MetadataStore> OpenAnother(const Clock& clock) = 0;
  //! The first column of the first row of `sql`, as an integer, read with full privileges.
  virtual int64_t Count(const std::string& sql) = 0;
  //! Runs `sql` with full privileges.
  virtual Status Exec(const std::string& sql) = 0;
  virtual size_t MigrationCount() const = 0;
  //! Positional parameter `n` in this backend's SQL: ?n or $n.
  virtual std::string Param(int n) const = 0;
};

class SqliteBackend final : public Backend {
 public:
  explicit SqliteBackend(const Clock& clock) {
    std::string pattern = (std::filesystem::temp_directory_path() / "imgpipe-contract-XXXXXX").string();
    dir_ = mkdtemp(pattern.data());
    auto db = SqliteDatabase::Open(dir_ / "warehouse.db");
    if (!db.ok()) throw std::runtime_error(db.error().message);
    db_ = std::move(db).value();
    store_ = std::make_unique<SqliteMetadataStore>(*db_, clock);
  }
  ~SqliteBackend() override {
    others_.clear();
    store_.reset();
    db_.reset();
    std::filesystem::remove_all(dir_);
  }
  MetadataStore& store() override { return *store_; }
  std::unique_ptr<MetadataStore> OpenAnother(const Clock& clock) override {
    auto db = SqliteDatabase::Open(dir_ / "warehouse.db");
    if (!db.ok()) return nullptr;
    others_.push_back(std::move(db).value());
    return std::make_unique<SqliteMetadataStore>(*others_.back(), clock);
  }
  int64_t Count(const std::string& sql) override {
    int64_t n = -1;
    Status s = db_->Read([&](SqliteConnection& conn) -> Status {
      IMGPIPE_ASSIGN_OR_RETURN(auto stmt, conn.Prepare(sql));
      IMGPIPE_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (row) n = stmt.Int(0);
      return Ok();
    });
    EXPECT_TRUE(s.ok()) << sql << ": " << s.error().message;
    return n;
  }
  Status Exec(const std::string& sql) override {
    return db_->Write([&](SqliteConnection& conn) { return conn.Exec(sql); });
  }
  size_t MigrationCount() const override { return SqliteMigrations().size(); }
  std::string Param(int n) const override { return "?" + std::to_string(n); }

 private:
  std::filesystem::path dir_;
  std::unique_ptr<SqliteDatabase> db_;
  std::unique_ptr<SqliteMetadataStore> store_;
  std::vector<std::unique_ptr<SqliteDatabase>> others_;
};

class PostgresBackend final : public Backend {
 public:
  PostgresBackend(std::unique_ptr<PostgresTestDatabase> database, std::unique_ptr<PostgresDatabase> db,
                  const Clock& clock)
      : database_(std::move(database)), db_(std::move(db)), store_(std::make_unique<PostgresMetadataStore>(*db_, clock)) {}
  ~PostgresBackend() override {
    others_.clear();
    store_.reset();
    db_.reset();
  }
  MetadataStore& store() override { return *store_; }
  std::unique_ptr<MetadataStore> OpenAnother(const Clock& clock) override {
    PostgresDatabase::Options options;
    options.url = database_->url();
    auto db = PostgresDatabase::Open(options);
    if (!db.ok()) return nullptr;
    others_.push_back(std::move(db).value());
    return std::make_unique<PostgresMetadataStore>(*others_.back(), clock);
  }
  int64_t Count(const std::string& sql) override {
    int64_t n = -1;
    Status s = db_->Run([&](PgConnection& conn) -> Status {
      IMGPIPE_ASSIGN_OR_RETURN(auto result, conn.Exec(sql));
      if (result.Rows() > 0) n = std::stoll(std::string(result.Text(0, 0)));
      return Ok();
    });
    EXPECT_TRUE(s.ok()) << sql << ": " << s.error().message;
    return n;
  }
  Status Exec(const std::string& sql) override {
    return db_->Run([&](PgConnection& conn) { return conn.ExecScript(sql); });
  }
  size_t MigrationCount() const override { return PostgresMigrations().size(); }
  std::string Param(int n) const override { return "$" + std::to_string(n); }

 private:
  std::unique_ptr<PostgresTestDatabase> database_;
  std::unique_ptr<PostgresDatabase> db_;
  std::unique_ptr<PostgresMetadataStore> store_;
  std::vector<std::unique_ptr<PostgresDatabase>> others_;
};

class MetadataStoreContractTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "sqlite") {
      backend_ = std::make_unique<SqliteBackend>(clock_);
    } else {
      const PostgresTestEnv env = PostgresTestEnv::FromEnvironment();
      if (env.url.empty()) {
        if (env.required) FAIL() << "IMGPIPE_REQUIRE_POSTGRES=1 but " << PostgresTestEnv::kMissing;
        GTEST_SKIP() << PostgresTestEnv::kMissing;
      }
      auto database = PostgresTestDatabase::Create(env.url);
      ASSERT_TRUE(database.ok()) << "PostgreSQL at IMGPIPE_TEST_POSTGRES_URL: " << database.error().message;
      PostgresDatabase::Options options;
      options.url = (*database)->url();
      auto db = PostgresDatabase::Open(options);
      ASSERT_TRUE(db.ok()) << db.error().message;
      backend_ = std::make_unique<PostgresBackend>(std::move(database).value(), std::move(db).value(), clock_);
    }
    store_ = &backend_->store();
    Status migrated = store_->Migrate();
    ASSERT_TRUE(migrated.ok()) << migrated.error().message;
  }

  bool IsPostgres() const { return GetParam() == "postgres"; }
  std::string P(int n) const { return backend_->Param(n); }
  int64_t Count(const std::string& sql) { return backend_->Count(sql); }

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

  FakeClock clock_{At("2026-01-10T12:00:00Z")};
  std::unique_ptr<Backend> backend_;
  MetadataStore* store_ = nullptr;
};

TEST_P(MetadataStoreContractTest, MigrateIsIdempotentAndKeepsData) {
  const auto applied = static_cast<int64_t>(backend_->MigrationCount());
  EXPECT_EQ(Count("SELECT count(*) FROM schema_migrations"), applied);
  EXPECT_EQ(store_->SchemaVersion().value(), store_->KnownSchemaVersion());
  ImageRecord image = BareImage(clock_.Now());
  ASSERT_TRUE(store_->InsertImage(image, std::nullopt).ok());
  auto first = MustQuery("SELECT version, applied_at FROM schema_migrations ORDER BY version");
  EXPECT_EQ(first.rows_json.size(), backend_->MigrationCount());
  EXPECT_EQ(first.rows_json[0][1], "\"2026-01-10T12:00:00.000Z\"") << "applied_at is the store clock's time";

  clock_.Advance(1h);
  for (int i = 0; i < 2; ++i) {
    Status s = store_->Migrate();
    ASSERT_TRUE(s.ok()) << s.error().message;
  }
  EXPECT_EQ(Count("SELECT count(*) FROM schema_migrations"), applied);
  EXPECT_EQ(MustQuery("SELECT version, applied_at FROM schema_migrations ORDER BY version").rows_json,
            first.rows_json);
  EXPECT_TRUE(store_->GetImage(image.id).ok());

  // A second process migrating the same database finds nothing to do.
  auto other = backend_->OpenAnother(clock_);
  ASSERT_TRUE(other);
  ASSERT_TRUE(other->Migrate().ok());
  EXPECT_EQ(Count("SELECT count(*) FROM schema_migrations"), applied);
}

TEST_P(MetadataStoreContractTest, MigrateRefusesADatabaseFromANewerVersion) {
  ASSERT_TRUE(backend_->Exec("INSERT INTO schema_migrations VALUES (999, 'future', '2030-01-01T00:00:00.000Z')").ok());
  Status s = store_->Migrate();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().kind, ErrorKind::kUnavailable);
  // Both versions, so the operator knows which binary the database needs.
  EXPECT_NE(s.error().message.find("999"), std::string::npos) << s.error().message;
  EXPECT_NE(s.error().message.find("only up to " + std::to_string(backend_->MigrationCount())), std::string::npos)
      << s.error().message;
  EXPECT_EQ(store_->SchemaVersion().value(), 999);
  EXPECT_EQ(store_->KnownSchemaVersion(), static_cast<int>(backend_->MigrationCount()));
}

TEST_P(MetadataStoreContractTest, ALeaseHasOneHolderUntilReleasedOrRunOut) {
  const TimePoint t0 = clock_.Now();
  auto other = backend_->OpenAnother(clock_);
  ASSERT_TRUE(other);
  auto a = store_->AcquireLease("sweeper", "a", t0, 10s);
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_TRUE(*a);
  // Another process is refused while the lease runs; the holder renews it.
  EXPECT_FALSE(other->AcquireLease("sweeper", "b", t0 + 9s, 10s).value());
  EXPECT_TRUE(store_->AcquireLease("sweeper", "a", t0 + 9s, 10s).value());
  EXPECT_FALSE(other->AcquireLease("sweeper", "b", t0 + 18s, 10s).value()) << "the renewal moved the expiry";
  // Other names are independent.
  EXPECT_TRUE(other->AcquireLease("compactor", "b", t0, 10s).value());
  // A holder that stops renewing (killed) loses the lease when it runs out.
  EXPECT_TRUE(other->AcquireLease("sweeper", "b", t0 + 19s, 10s).value());
  EXPECT_FALSE(store_->AcquireLease("sweeper", "a", t0 + 20s, 10s).value());
  // Releasing by a non-holder changes nothing; by the holder, frees it at once.
  ASSERT_TRUE(store_->ReleaseLease("sweeper", "a").ok());
  EXPECT_FALSE(store_->AcquireLease("sweeper", "a", t0 + 21s, 10s).value());
  ASSERT_TRUE(other->ReleaseLease("sweeper", "b").ok());
  EXPECT_TRUE(store_->AcquireLease("sweeper", "a", t0 + 21s, 10s).value());
  EXPECT_EQ(Count("SELECT count(*) FROM leases"), 2);
}

TEST_P(MetadataStoreContractTest, ConcurrentLeaseRequestsHaveOneWinner) {
  constexpr int kProcesses = 6;
  std::vector<std::unique_ptr<MetadataStore>> stores;
  for (int i = 0; i < kProcesses; ++i) {
    stores.push_back(backend_->OpenAnother(clock_));
    ASSERT_TRUE(stores.back());
  }
  std::atomic<int> winners{0};
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kProcesses; ++i) {
    threads.emplace_back([&, i] {
      auto held = stores[i]->AcquireLease("sweeper", "owner-" + std::to_string(i), clock_.Now(), 60s);
      if (!held.ok()) ++errors;
      else if (*held) ++winners;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(winners.load(), 1);
}

TEST_P(MetadataStoreContractTest, InsertAndGetRoundTripEveryField) {
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
  // The same JSON value (a backend may normalise spacing and key order).
  EXPECT_EQ(boost::json::parse(g.user_metadata_json), boost::json::parse(full.user_metadata_json))
      << g.user_metadata_json;
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
                       "gps_lat, gps_lon, orientation, received_at, phash FROM images WHERE id = " + P(1),
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

TEST_P(MetadataStoreContractTest, InsertWritesTheJobInTheSameTransaction) {
  std::vector<ImageRecord> images;
  for (int i = 0; i < 5; ++i) {
    images.push_back(BareImage(clock_.Now() + std::chrono::seconds(i)));
    images.back().pipeline = i % 2 ? "default" : "fast";
    ASSERT_TRUE(store_->InsertImage(images.back(), std::nullopt).ok());
  }
  EXPECT_EQ(Count("SELECT count(*) FROM jobs"), 5);
  EXPECT_EQ(Count("SELECT count(*) FROM images i JOIN jobs j ON j.image_id = i.id AND j.pipeline = i.pipeline "
                  "AND j.attempts = 0 AND j.lease_owner IS NULL"),
            5);

  // A row the database refuses (user metadata must be JSON) leaves neither image nor job behind.
  ImageRecord bad = BareImage(clock_.Now());
  bad.user_metadata_json = "{not json";
  Status s = store_->InsertImage(bad, std::nullopt);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_EQ(store_->GetImage(bad.id).error().kind, ErrorKind::kNotFound);
  EXPECT_EQ(Count("SELECT count(*) FROM jobs"), 5);
  // The id is free again: nothing of the failed insert remains.
  bad.user_metadata_json = "{}";
  EXPECT_TRUE(store_->InsertImage(bad, std::nullopt).ok());
}

TEST_P(MetadataStoreContractTest, DuplicateIdIsAConflictAndChangesNothing) {
  ImageRecord image = BareImage(clock_.Now());
  ASSERT_TRUE(store_->InsertImage(image, std::nullopt).ok());

  ImageRecord again = image;
  again.sha256 = std::string(64, 'c');
  IdempotencyRecord idem{"k_1", "retry-1", "hash", 201, R"({"id":"x"})", again.id, clock_.Now()};
  Status s = store_->InsertImage(again, idem);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().kind, ErrorKind::kConflict);
  EXPECT_NE(s.error().message.find(image.id.value()), std::string::npos);

  // The same id on another day is the same image, too.
  ImageRecord later = image;
  later.received_at = image.received_at + 48h;
  EXPECT_EQ(store_->InsertImage(later, std::nullopt).error().kind, ErrorKind::kConflict);

  EXPECT_EQ(store_->GetImage(image.id)->sha256, image.sha256);
  EXPECT_EQ(store_->GetImage(image.id)->received_at, image.received_at);
  EXPECT_EQ(Count("SELECT count(*) FROM jobs"), 1);
  EXPECT_EQ(Count("SELECT count(*) FROM images"), 1);
  auto found = store_->FindIdempotency("k_1", "retry-1");
  ASSERT_TRUE(found.ok());
  EXPECT_FALSE(found->has_value());
}

TEST_P(MetadataStoreContractTest, IdempotencyKeyIsStoredWithTheImageAndConflictsOnReuse) {
  ImageRecord first = BareImage(clock_.Now());
  IdempotencyRecord idem{"k_1", "key-1", "body-hash-1", 201, R"({"id":"first"})", first.id,
                         At("2026-01-10T12:00:00.250Z")};
  ASSERT_TRUE(store_->InsertImage(first, idem).ok());

  auto found = store_->FindIdempotency("k_1", "key-1");
  ASSERT_TRUE(found.ok()) << found.error().message;
  ASSERT_TRUE(found->has_value());
  const IdempotencyRecord& r = **found;
  EXPECT_EQ(r.api_key_id, "k_1");
  EXPECT_EQ(r.key, "key-1");
  EXPECT_EQ(r.request_hash, "body-hash-1");
  EXPECT_EQ(r.status_code, 201);
  EXPECT_EQ(r.response_json, R"({"id":"first"})");
  EXPECT_EQ(r.image_id, first.id);
  EXPECT_EQ(r.created_at, idem.created_at);

  // The same key by the same API key for another image: conflict, and the second image is not stored at all.
  ImageRecord second = BareImage(clock_.Now() + 1s);
  IdempotencyRecord reuse = idem;
  reuse.image_id = second.id;
  Status s = store_->InsertImage(second, reuse);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().kind, ErrorKind::kConflict);
  EXPECT_EQ(store_->GetImage(second.id).error().kind, ErrorKind::kNotFound);
  EXPECT_EQ(Count("SELECT count(*) FROM jobs"), 1);

  // Keys are per API key.
  reuse.api_key_id = "k_2";
  EXPECT_TRUE(store_->InsertImage(second, reuse).ok());
  EXPECT_EQ(store_->FindIdempotency("k_2", "key-1")->value().image_id, second.id);
}

TEST_P(MetadataStoreContractTest, InsertImageIfAbsentInsertsOnce) {
  ImageRecord image = BareImage(clock_.Now(), "stream-a");
  auto first = store_->InsertImageIfAbsent(image);
  ASSERT_TRUE(first.ok()) << first.error().message;
  EXPECT_TRUE(first.value());

  ImageRecord redelivered = image;
  redelivered.bytes = 999;
  auto second = store_->InsertImageIfAbsent(redelivered);
  ASSERT_TRUE(second.ok()) << second.error().message;
  EXPECT_FALSE(second.value());
  EXPECT_EQ(store_->GetImage(image.id)->bytes, image.bytes);
  EXPECT_EQ(Count("SELECT count(*) FROM jobs"), 1);
}

TEST_P(MetadataStoreContractTest, InsertImagesIfAbsentCommitsABatchAndSkipsExistingRows) {
  ImageRecord existing = BareImage(clock_.Now(), "stream-a");
  ASSERT_TRUE(store_->InsertImageIfAbsent(existing).ok());
  std::vector<ImageRecord> batch;
  for (int i = 0; i < 5; ++i) batch.push_back(BareImage(clock_.Now() + std::chrono::seconds(i + 1), "stream-a"));
  batch.insert(batch.begin() + 2, existing);
  auto result = store_->InsertImagesIfAbsent(batch);
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(result.value(), (std::vector<bool>{true, true, false, true, true, true}));
  EXPECT_EQ(Count("SELECT count(*) FROM images"), 6);
  EXPECT_EQ(Count("SELECT count(*) FROM jobs"), 6);
  auto again = store_->InsertImagesIfAbsent(batch);
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(again.value(), std::vector<bool>(6, false));
  EXPECT_EQ(Count("SELECT count(*) FROM jobs"), 6);
  auto empty = store_->InsertImagesIfAbsent({});
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

TEST_P(MetadataStoreContractTest, ConcurrentRedeliveriesInsertEachImageOnce) {
  // Eight consumers receive the same 20 records (as after a rebalance): each image and job is stored once.
  std::vector<ImageRecord> images;
  for (int i = 0; i < 20; ++i) images.push_back(BareImage(clock_.Now() + std::chrono::seconds(i), "stream-a"));
  std::mutex mu;
  int inserted = 0;
  std::vector<std::string> errors;
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (const ImageRecord& image : images) {
        auto r = store_->InsertImageIfAbsent(image);
        std::lock_guard lock(mu);
        if (!r.ok()) {
          errors.push_back(r.error().message);
        } else if (r.value()) {
          ++inserted;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_TRUE(errors.empty()) << errors.front();
  EXPECT_EQ(inserted, 20);
  EXPECT_EQ(Count("SELECT count(*) FROM images"), 20);
  EXPECT_EQ(Count("SELECT count(*) FROM jobs"), 20);
}

TEST_P(MetadataStoreContractTest, ListImagesPaginatesWithFiltersWithoutGapsOrDuplicates) {
  const TimePoint base = At("2026-01-01T00:00:00Z");
  std::vector<ImageRecord> all;  // oldest first
  for (int i = 0; i < 120; ++i) {
    // Spread over three UTC days, so listings cross day boundaries (partitions, where a backend has them).
    ImageRecord image = BareImage(base + std::chrono::minutes(i * 30), i % 2 ? "stream-a" : "upload");
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
  filtered.received_from = base + 10h;
  filtered.received_to = base + 40h;
  auto in_range = [&](const ImageRecord& image) {
    return image.source == "stream-a" && image.received_at >= base + 10h && image.received_at < base + 40h;
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

TEST_P(MetadataStoreContractTest, RecordProcessedTwiceKeepsOneRowPerRendition) {
  ImageRecord image = BareImage(clock_.Now());
  ASSERT_TRUE(store_->InsertImage(image, std::nullopt).ok());
  ASSERT_TRUE(store_->MarkProcessing(image.id).ok());
  EXPECT_EQ(store_->GetImage(image.id)->status, ImageStatus::kProcessing);

  auto renditions = [&](std::string suffix, uint64_t bytes) {
    std::vector<RenditionRecord> out;
    for (std::string name : {"thumb-256", "thumb-1024"}) {
      RenditionRecord r;
      r.image_id = image.id;
      r.name = name;
      r.key = "renditions/" + image.id.value() + "/" + name + suffix;
      r.format = "webp";
      r.content_type = "image/webp";
      r.width = name == "thumb-256" ? 256 : 1024;
      r.height = r.width / 2;
      r.bytes = bytes;
      r.created_at = clock_.Now();
      out.push_back(r);
    }
    return out;
  };
  const TimePoint finished1 = clock_.Now() + 3s;
  ASSERT_TRUE(store_->RecordProcessed(image.id, 0x8000000000000001ULL, "#102030", renditions(".a", 100),
                                      Run(image.id, "processed", 1.5, finished1))
                  .ok());
  clock_.Advance(1min);
  const TimePoint finished2 = clock_.Now() + 3s;
  Status s = store_->RecordProcessed(image.id, 42, "#405060", renditions(".b", 200),
                                     Run(image.id, "processed", 2.5, finished2, 2));
  ASSERT_TRUE(s.ok()) << s.error().message;

  auto listed = store_->ListRenditions(image.id);
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 2u);
  for (const auto& r : *listed) {
    EXPECT_EQ(r.bytes, 200u);
    EXPECT_EQ(r.key.substr(r.key.size() - 2), ".b");
    EXPECT_EQ(r.image_id, image.id);
    EXPECT_EQ(r.created_at, clock_.Now());
  }
  EXPECT_EQ((*listed)[0].name, "thumb-1024");  // by name
  EXPECT_EQ((*listed)[0].width, 1024);
  EXPECT_EQ(Count("SELECT count(*) FROM renditions"), 2);

  auto got = store_->GetImage(image.id);
  EXPECT_EQ(got->status, ImageStatus::kProcessed);
  EXPECT_EQ(got->processed_at, finished2);
  EXPECT_EQ(got->phash, 42u);
  EXPECT_EQ(got->dominant_colour, "#405060");
  EXPECT_FALSE(got->error);

  auto runs = store_->ListRuns(image.id);
  ASSERT_TRUE(runs.ok());
  ASSERT_EQ(runs->size(), 2u);
  EXPECT_EQ((*runs)[1].attempt, 2);
  EXPECT_EQ((*runs)[1].finished_at, finished2);
  EXPECT_EQ((*runs)[1].started_at, finished2 - 2s);
  EXPECT_EQ((*runs)[1].status, "processed");
  EXPECT_EQ((*runs)[1].total_seconds, 2.5);
  EXPECT_EQ((*runs)[1].decode_seconds, 2.5 / 4);
  EXPECT_EQ((*runs)[1].encode_seconds, 2.5 / 2);

  // A processed image is not moved back by a late MarkProcessing (a redelivered job).
  ASSERT_TRUE(store_->MarkProcessing(image.id).ok());
  EXPECT_EQ(store_->GetImage(image.id)->status, ImageStatus::kProcessed);
  EXPECT_EQ(store_->MarkProcessing(NewImageId(clock_.Now())).error().kind, ErrorKind::kNotFound);
  EXPECT_EQ(store_->RecordProcessed(NewImageId(clock_.Now()), 1, "#000000", {}, Run(image.id, "processed", 1, finished2))
                .error()
                .kind,
            ErrorKind::kNotFound);
}

TEST_P(MetadataStoreContractTest, RecordFailureAppendsRunsAndFailsOnlyWhenFinal) {
  ImageRecord image = BareImage(clock_.Now());
  ASSERT_TRUE(store_->InsertImage(image, std::nullopt).ok());
  ASSERT_TRUE(store_->MarkProcessing(image.id).ok());

  ProcessingRun retry = Run(image.id, "retrying", 0.5, clock_.Now());
  retry.error = "timeout reading original";
  ASSERT_TRUE(store_->RecordFailure(image.id, retry, false).ok());
  EXPECT_EQ(store_->GetImage(image.id)->status, ImageStatus::kProcessing);

  ProcessingRun last = Run(image.id, "failed", 0.7, clock_.Now() + 5s, 2);
  last.error = "VipsJpeg: premature end of JPEG file";
  ASSERT_TRUE(store_->RecordFailure(image.id, last, true).ok());
  auto got = store_->GetImage(image.id);
  EXPECT_EQ(got->status, ImageStatus::kFailed);
  EXPECT_EQ(got->error, last.error);
  auto runs = store_->ListRuns(image.id);
  ASSERT_EQ(runs->size(), 2u);
  EXPECT_EQ((*runs)[0].error, retry.error);
  EXPECT_EQ((*runs)[1].status, "failed");
  EXPECT_EQ(store_->RecordFailure(NewImageId(clock_.Now()), last, true).error().kind, ErrorKind::kNotFound);
}

TEST_P(MetadataStoreContractTest, ExpiredRowsStayAndAreNeverResurrected) {
  const TimePoint base = At("2026-01-01T00:00:00Z");
  std::vector<ImageRecord> images;
  for (int i = 0; i < 5; ++i) {
    ImageRecord image = BareImage(base + std::chrono::hours(i));
    image.expires_at = base + std::chrono::hours(10 - i);  // the newest expires first
    ASSERT_TRUE(store_->InsertImage(image, std::nullopt).ok());
    images.push_back(image);
  }
  RenditionRecord thumb{images[4].id, "thumb-256", "r/key", "jpeg", "image/jpeg", 256, 200, 5000, base};
  ASSERT_TRUE(store_->RecordProcessed(images[4].id, 1, "#000000", {thumb}, Run(images[4].id, "processed", 1, base))
                  .ok());

  // At base+8h, images 2, 3, 4 have expired (expires_at 8h, 7h, 6h); oldest expiry first.
  auto expired = store_->FindExpired(base + 8h, 10);
  ASSERT_TRUE(expired.ok()) << expired.error().message;
  ASSERT_EQ(expired->size(), 3u);
  EXPECT_EQ((*expired)[0].id, images[4].id);
  EXPECT_EQ((*expired)[1].id, images[3].id);
  EXPECT_EQ((*expired)[2].id, images[2].id);
  EXPECT_EQ(store_->FindExpired(base + 8h, 2)->size(), 2u);

  const TimePoint swept = base + 8h + 1s;
  ASSERT_TRUE(store_->MarkExpired(images[4].id, swept).ok());
  ASSERT_TRUE(store_->MarkExpired(images[3].id, swept).ok());
  EXPECT_EQ(Count("SELECT count(*) FROM jobs"), 3);  // nothing left to process for expired images
  auto rest = store_->FindExpired(base + 8h, 10);
  ASSERT_EQ(rest->size(), 1u);
  EXPECT_EQ((*rest)[0].id, images[2].id);

  // The row and its renditions stay: metadata outlives blobs.
  auto got = store_->GetImage(images[4].id);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->status, ImageStatus::kExpired);
  EXPECT_EQ(got->expired_at, swept);
  EXPECT_EQ(store_->ListRenditions(images[4].id)->size(), 1u);

  // Late workers cannot bring it back.
  ASSERT_TRUE(store_->MarkProcessing(images[3].id).ok());
  EXPECT_EQ(store_->GetImage(images[3].id)->status, ImageStatus::kExpired);
  Status late = store_->RecordProcessed(images[3].id, 7, "#ffffff", {}, Run(images[3].id, "processed", 1, swept));
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.error().kind, ErrorKind::kConflict);
  EXPECT_EQ(store_->GetImage(images[3].id)->status, ImageStatus::kExpired);
  EXPECT_FALSE(store_->GetImage(images[3].id)->phash);
  ProcessingRun failed = Run(images[3].id, "failed", 1, swept);
  failed.error = "original gone";
  ASSERT_TRUE(store_->RecordFailure(images[3].id, failed, true).ok());
  EXPECT_EQ(store_->GetImage(images[3].id)->status, ImageStatus::kExpired);

  // Expiring twice keeps the first time; deleting an expired image keeps when its blobs went.
  ASSERT_TRUE(store_->MarkExpired(images[4].id, swept + 1h).ok());
  EXPECT_EQ(store_->GetImage(images[4].id)->expired_at, swept);
  ASSERT_TRUE(store_->MarkDeleted(images[4].id, swept + 2h).ok());
  EXPECT_EQ(store_->GetImage(images[4].id)->status, ImageStatus::kDeleted);
  EXPECT_EQ(store_->GetImage(images[4].id)->expired_at, swept);
  ASSERT_TRUE(store_->MarkExpired(images[4].id, swept + 3h).ok());
  EXPECT_EQ(store_->GetImage(images[4].id)->status, ImageStatus::kDeleted);

  ASSERT_TRUE(store_->MarkDeleted(images[0].id, base + 1h).ok());
  EXPECT_EQ(store_->GetImage(images[0].id)->status, ImageStatus::kDeleted);
  EXPECT_EQ(store_->GetImage(images[0].id)->expired_at, base + 1h);
  EXPECT_EQ(Count("SELECT count(*) FROM jobs"), 2);
  EXPECT_EQ(store_->MarkExpired(NewImageId(base), base).error().kind, ErrorKind::kNotFound);
}

TEST_P(MetadataStoreContractTest, ScriptLabelsAreReplacedPerVersionAndRunsKeepTheScript) {
  ImageRecord image = BareImage(clock_.Now());
  ASSERT_TRUE(store_->InsertImage(image, std::nullopt).ok());
  const std::string v1(64, '1'), v2(64, '2');
  Status first = store_->RecordLabels(image.id, "faces", v1, {{"faces", "2", 2.0}, {"mood", "happy", std::nullopt}});
  ASSERT_TRUE(first.ok()) << first.error().message;
  ASSERT_TRUE(store_->RecordLabels(image.id, "faces", v2, {{"faces", "3", 3.5}}).ok());
  EXPECT_EQ(Count("SELECT count(*) FROM image_labels"), 3);
  // A re-run of v1 replaces v1's rows only; v2's stay beside them for comparison.
  Status again = store_->RecordLabels(image.id, "faces", v1, {{"faces", "1", 1.0}});
  ASSERT_TRUE(again.ok()) << again.error().message;
  auto rows = MustQuery("SELECT script_name, script_version, key, value, number, image_id FROM image_labels "
                        "ORDER BY script_version, key");
  ASSERT_EQ(rows.rows_json.size(), 2u);
  const std::string id = "\"" + image.id.value() + "\"";
  EXPECT_EQ(rows.rows_json[0], (std::vector<std::string>{"\"faces\"", "\"" + v1 + "\"", "\"faces\"", "\"1\"", "1", id}));
  EXPECT_EQ(rows.rows_json[1], (std::vector<std::string>{"\"faces\"", "\"" + v2 + "\"", "\"faces\"", "\"3\"", "3.5", id}));
  // Labels without a number, and an empty set (which clears the version's labels).
  ASSERT_TRUE(store_->RecordLabels(image.id, "tags", v1, {{"tag", "cat", std::nullopt}}).ok());
  EXPECT_EQ(MustQuery("SELECT number FROM image_labels WHERE script_name = 'tags'").rows_json,
            (std::vector<std::vector<std::string>>{{"null"}}));
  ASSERT_TRUE(store_->RecordLabels(image.id, "tags", v1, {}).ok());
  EXPECT_EQ(Count("SELECT count(*) FROM image_labels WHERE script_name = 'tags'"), 0);
  EXPECT_EQ(store_->RecordLabels(NewImageId(clock_.Now()), "faces", v1, {}).error().kind, ErrorKind::kNotFound);

  ProcessingRun run = Run(image.id, "processed", 1.0, clock_.Now());
  run.script_name = "faces";
  run.script_version = v2;
  ASSERT_TRUE(store_->RecordProcessed(image.id, std::nullopt, std::nullopt, {}, run).ok());
  ASSERT_TRUE(store_->RecordFailure(image.id, Run(image.id, "retry", 1.0, clock_.Now()), false).ok());
  auto runs = store_->ListRuns(image.id);
  ASSERT_TRUE(runs.ok()) << runs.error().message;
  ASSERT_EQ(runs->size(), 2u);
  EXPECT_EQ((*runs)[0].script_name, "faces");
  EXPECT_EQ((*runs)[0].script_version, v2);
  EXPECT_EQ((*runs)[1].script_name, "");  // the built-in pipeline records none
  EXPECT_EQ(MustQuery("SELECT script_name, script_version FROM processing_runs WHERE status = 'processed'").rows_json,
            (std::vector<std::vector<std::string>>{{"\"faces\"", "\"" + v2 + "\""}}));
}

TEST_P(MetadataStoreContractTest, RequeueImageQueuesOnlyFinishedLiveImages) {
  ImageRecord image = BareImage(clock_.Now());
  ASSERT_TRUE(store_->InsertImage(image, std::nullopt).ok());
  // Still queued (its first job is in the queue): nothing to do.
  auto still_queued = store_->RequeueImage(image.id, "faces", clock_.Now());
  ASSERT_TRUE(still_queued.ok()) << still_queued.error().message;
  EXPECT_FALSE(*still_queued);
  ASSERT_TRUE(backend_->Exec("DELETE FROM jobs").ok());
  ASSERT_TRUE(store_->RecordProcessed(image.id, std::nullopt, std::nullopt, {},
                                      Run(image.id, "processed", 1.0, clock_.Now())).ok());
  auto queued = store_->RequeueImage(image.id, "faces", clock_.Now());
  ASSERT_TRUE(queued.ok()) << queued.error().message;
  EXPECT_TRUE(*queued);
  auto row = store_->GetImage(image.id);
  ASSERT_TRUE(row.ok());
  EXPECT_EQ(row->status, ImageStatus::kQueued);
  EXPECT_EQ(row->pipeline, "faces");
  EXPECT_EQ(MustQuery("SELECT pipeline, attempts FROM jobs WHERE image_id = " + P(1), {"\"" + image.id.value() + "\""})
                .rows_json,
            (std::vector<std::vector<std::string>>{{"\"faces\"", "0"}}));
  // Queued again: a second request changes nothing and adds no job.
  EXPECT_FALSE(store_->RequeueImage(image.id, "faces", clock_.Now()).value());
  EXPECT_EQ(Count("SELECT count(*) FROM jobs"), 1);
  // Earlier runs stay.
  EXPECT_EQ(store_->ListRuns(image.id)->size(), 1u);

  // Past its retention, or failed and expired: never requeued.
  ImageRecord old = BareImage(clock_.Now());
  ASSERT_TRUE(store_->InsertImage(old, std::nullopt).ok());
  ASSERT_TRUE(backend_->Exec("DELETE FROM jobs WHERE image_id = '" + old.id.value() + "'").ok());
  ASSERT_TRUE(store_->RecordFailure(old.id, Run(old.id, "failed", 1.0, clock_.Now()), true).ok());
  EXPECT_FALSE(store_->RequeueImage(old.id, "faces", old.expires_at).value());
  EXPECT_TRUE(store_->RequeueImage(old.id, "faces", old.expires_at - 1s).value());
  EXPECT_EQ(store_->RequeueImage(NewImageId(clock_.Now()), "faces", clock_.Now()).error().kind, ErrorKind::kNotFound);
}

TEST_P(MetadataStoreContractTest, ProcessingStartsAreCountedDurablyUncountedAndResetByARequeue) {
  ImageRecord image = BareImage(clock_.Now());
  image.processing_starts = 7;  // not the caller's to set
  ASSERT_TRUE(store_->InsertImage(image, std::nullopt).ok());
  EXPECT_EQ(store_->GetImage(image.id)->processing_starts, 0);
  // Two workers started it and died: each start is committed when MarkProcessing returns, so another process (the
  // next worker, after a kill -9 of this one) reads both, whatever its queue redelivers.
  ASSERT_TRUE(store_->MarkProcessing(image.id).ok());
  ASSERT_TRUE(store_->MarkProcessing(image.id).ok());
  auto other = backend_->OpenAnother(clock_);
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(other->GetImage(image.id)->processing_starts, 2);
  EXPECT_EQ(other->GetImage(image.id)->status, ImageStatus::kProcessing);
  // Analysts see the column too.
  EXPECT_EQ(Count("SELECT processing_starts FROM images WHERE id = '" + image.id.value() + "'"), 2);
  // A start handed back on a graceful shutdown is not an attempt; never below zero.
  ASSERT_TRUE(store_->UncountProcessingStart(image.id).ok());
  EXPECT_EQ(store_->GetImage(image.id)->processing_starts, 1);
  ASSERT_TRUE(store_->UncountProcessingStart(image.id).ok());
  ASSERT_TRUE(store_->UncountProcessingStart(image.id).ok());
  EXPECT_EQ(store_->GetImage(image.id)->processing_starts, 0);
  EXPECT_EQ(store_->UncountProcessingStart(NewImageId(clock_.Now())).error().kind, ErrorKind::kNotFound);

  // A given-up image is not started again: a late MarkProcessing (a redelivered job) counts nothing.
  ASSERT_TRUE(store_->MarkProcessing(image.id).ok());
  ProcessingRun gave_up = Run(image.id, "failed", 0, clock_.Now());
  gave_up.error = "worker died during processing";
  ASSERT_TRUE(store_->RecordFailure(image.id, gave_up, true).ok());
  ASSERT_TRUE(store_->MarkProcessing(image.id).ok());
  EXPECT_EQ(store_->GetImage(image.id)->processing_starts, 1);
  EXPECT_EQ(store_->GetImage(image.id)->status, ImageStatus::kFailed);
  // Reprocessing starts the count again.
  ASSERT_TRUE(backend_->Exec("DELETE FROM jobs").ok());
  ASSERT_TRUE(store_->RequeueImage(image.id, "default", clock_.Now()).value());
  EXPECT_EQ(store_->GetImage(image.id)->processing_starts, 0);
  ASSERT_TRUE(store_->MarkProcessing(image.id).ok());
  auto listed = store_->ListImages(ImageFilter{});
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->items.size(), 1u);
  EXPECT_EQ(listed->items[0].processing_starts, 1);
}

TEST_P(MetadataStoreContractTest, ApiKeysCreateFindListRevokeCount) {
  EXPECT_EQ(store_->CountApiKeys().value(), 0);
  ApiKeyRecord admin{"k_admin", "hash-admin", Role::kAdmin, "bootstrap", At("2026-01-01T00:00:00Z"), std::nullopt};
  ApiKeyRecord analyst{"k_analyst", "hash-analyst", Role::kAnalyst, "bi", At("2026-01-02T00:00:00Z"), std::nullopt};
  ASSERT_TRUE(store_->CreateApiKey(admin).ok());
  ASSERT_TRUE(store_->CreateApiKey(analyst).ok());

  ApiKeyRecord same_hash = analyst;
  same_hash.id = "k_other";
  EXPECT_EQ(store_->CreateApiKey(same_hash).error().kind, ErrorKind::kConflict);
  ApiKeyRecord same_id = analyst;
  same_id.secret_hash = "hash-other";
  EXPECT_EQ(store_->CreateApiKey(same_id).error().kind, ErrorKind::kConflict);

  auto found = store_->FindApiKeyByHash("hash-analyst");
  ASSERT_TRUE(found.ok()) << found.error().message;
  EXPECT_EQ(found->id, "k_analyst");
  EXPECT_EQ(found->role, Role::kAnalyst);
  EXPECT_EQ(found->name, "bi");
  EXPECT_EQ(found->created_at, analyst.created_at);
  EXPECT_FALSE(found->revoked_at);
  EXPECT_EQ(store_->FindApiKeyByHash("nope").error().kind, ErrorKind::kNotFound);

  const TimePoint revoked = At("2026-01-03T00:00:00Z");
  ASSERT_TRUE(store_->RevokeApiKey("k_analyst", revoked).ok());
  ASSERT_TRUE(store_->RevokeApiKey("k_analyst", revoked + 1h).ok());
  EXPECT_EQ(store_->FindApiKeyByHash("hash-analyst")->revoked_at, revoked);  // revoked keys are still found
  EXPECT_EQ(store_->RevokeApiKey("k_missing", revoked).error().kind, ErrorKind::kNotFound);

  auto listed = store_->ListApiKeys();
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0].id, "k_admin");
  EXPECT_EQ((*listed)[1].revoked_at, revoked);
  EXPECT_EQ(store_->CountApiKeys().value(), 2);
}

TEST_P(MetadataStoreContractTest, QueryReturnsJsonCellsAndBindsParameters) {
  auto r = MustQuery("SELECT " + P(1) + " AS i, " + P(2) + " AS s, " + P(3) + " AS n, " + P(4) +
                         " AS d, 'say \"hi\"\n' AS q",
                     {"42", "\"héllo\"", "null", "2.5"});
  EXPECT_EQ(r.columns, (std::vector<std::string>{"i", "s", "n", "d", "q"}));
  ASSERT_EQ(r.rows_json.size(), 1u);
  EXPECT_EQ(r.rows_json[0], (std::vector<std::string>{"42", "\"héllo\"", "null", "2.5", "\"say \\\"hi\\\"\\n\""}));
  EXPECT_FALSE(r.truncated);

  // A string parameter compares with a time column, and an integer with an integer column.
  ImageRecord image = BareImage(At("2026-01-10T11:00:00Z"));
  ASSERT_TRUE(store_->InsertImage(image, std::nullopt).ok());
  auto filtered = MustQuery("SELECT count(*) AS n FROM images WHERE received_at >= " + P(1) + " AND width = " + P(2),
                            {"\"2026-01-10T10:00:00.000Z\"", "10"});
  EXPECT_EQ(filtered.rows_json, (std::vector<std::vector<std::string>>{{"1"}}));

  auto wrong_count = store_->Query("SELECT " + P(1) + ", " + P(2), {"1"}, 10, 10s);
  ASSERT_FALSE(wrong_count.ok());
  EXPECT_EQ(wrong_count.error().kind, ErrorKind::kInvalidArgument);
  auto not_scalar = store_->Query("SELECT " + P(1), {"[1,2]"}, 10, 10s);
  ASSERT_FALSE(not_scalar.ok());
  EXPECT_EQ(not_scalar.error().kind, ErrorKind::kInvalidArgument);
  auto bad_json = store_->Query("SELECT " + P(1), {"{"}, 10, 10s);
  EXPECT_EQ(bad_json.error().kind, ErrorKind::kInvalidArgument);
  auto too_big = store_->Query("SELECT " + P(1), {"18446744073709551615"}, 10, 10s);
  EXPECT_EQ(too_big.error().kind, ErrorKind::kInvalidArgument);

  auto unknown = store_->Query("SELECT * FROM imagez", {}, 10, 10s);
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_NE(unknown.error().message.find("imagez"), std::string::npos) << unknown.error().message;

  auto empty = store_->Query("  -- nothing\n", {}, 10, 10s);
  EXPECT_EQ(empty.error().kind, ErrorKind::kInvalidArgument);
  auto two = store_->Query("SELECT 1; DELETE FROM images", {}, 10, 10s);
  ASSERT_FALSE(two.ok());
  EXPECT_EQ(two.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_EQ(Count("SELECT count(*) FROM images"), 1);
}

TEST_P(MetadataStoreContractTest, QueryIsReadOnlyWhateverTheSql) {
  ImageRecord image = BareImage(clock_.Now());
  ASSERT_TRUE(store_->InsertImage(image, std::nullopt).ok());
  ASSERT_TRUE(store_->CreateApiKey({"k_1", "secret-hash", Role::kAdmin, "", clock_.Now(), std::nullopt}).ok());
  std::vector<std::string> writes = {
      "INSERT INTO images (id) VALUES ('x')",
      "UPDATE images SET status = 'deleted'",
      "DELETE FROM images",
      "DELETE FROM api_keys",
      "UPDATE api_keys SET role = 'admin'",
      "DROP TABLE images",
      "DROP VIEW format_mix",
      "CREATE TABLE t (x integer)",
      "CREATE TEMP TABLE t (x integer)",
      "CREATE VIEW v AS SELECT 1 AS x",
      "CREATE INDEX evil ON images (sha256)",
      "ALTER TABLE images ADD COLUMN evil integer",
      "WITH x AS (SELECT 1) DELETE FROM jobs",
      "INSERT INTO jobs (image_id, pipeline, not_before, enqueued_at) SELECT id, 'x', 'c', 'd' FROM images",
  };
  const std::vector<std::string> postgres_only = {
      "COPY images FROM STDIN",
      "COPY images TO '/tmp/imgpipe-evil'",
      "COPY (SELECT 1) TO PROGRAM 'true'",
      "SELECT pg_terminate_backend(pg_backend_pid())",
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
      "SELECT set_config('role', session_user, true)",
      "SELECT set_config('default_transaction_read_only', 'off', false)",
      "UPDATE pg_settings SET setting = 'off' WHERE name = 'default_transaction_read_only'",
      "SELECT nextval('processing_runs_id_seq')",
      "SELECT setval('jobs_id_seq', 1)",
      "SELECT * FROM images FOR UPDATE",
      "LOCK TABLE images IN ACCESS EXCLUSIVE MODE",
      "SELECT lo_import('/etc/hostname')",
      "SELECT pg_read_file('/etc/hostname')",
      "TRUNCATE jobs",
      "VACUUM images",
      "GRANT SELECT ON api_keys TO PUBLIC",
      "SET ROLE NONE",
      "SELECT pg_reload_conf()",
  };
  const std::vector<std::string> sqlite_only = {
      "ATTACH DATABASE 'other.db' AS other",
      "PRAGMA journal_mode = DELETE",
      "PRAGMA user_version = 7",
      "BEGIN",
      "VACUUM",
      "REPLACE INTO jobs (image_id, pipeline, not_before, enqueued_at) VALUES ('a', 'b', 'c', 'd')",
      "SELECT load_extension('/tmp/evil')",
  };
  const auto& extra = IsPostgres() ? postgres_only : sqlite_only;
  writes.insert(writes.end(), extra.begin(), extra.end());
  for (const auto& sql : writes) {
    auto r = store_->Query(sql, {}, 10, 10s);
    ASSERT_FALSE(r.ok()) << sql;
    EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument) << sql << ": " << r.error().message;
    EXPECT_FALSE(r.error().message.empty()) << sql;
  }
  EXPECT_EQ(Count("SELECT count(*) FROM images"), 1);
  EXPECT_EQ(Count("SELECT count(*) FROM jobs"), 1);
  EXPECT_EQ(Count("SELECT count(*) FROM api_keys"), 1);
  EXPECT_EQ(store_->GetImage(image.id)->status, ImageStatus::kQueued);
  EXPECT_EQ(MustQuery("SELECT count(*) FROM format_mix").rows_json[0][0], "1");
  // Queries still run afterwards, on the same (reset) connections.
  for (int i = 0; i < 4; ++i) EXPECT_EQ(MustQuery("SELECT count(*) FROM images").rows_json[0][0], "1");
}

TEST_P(MetadataStoreContractTest, QueryCannotReadKeysOrStoredResponses) {
  ASSERT_TRUE(store_->CreateApiKey({"k_1", "secret-hash", Role::kAdmin, "", clock_.Now(), std::nullopt}).ok());
  ImageRecord image = BareImage(clock_.Now());
  IdempotencyRecord idem{"k_1", "key-1", "body-hash", 201, R"({"secret":"response"})", image.id, clock_.Now()};
  ASSERT_TRUE(store_->InsertImage(image, idem).ok());
  const std::vector<std::pair<std::string, std::string>> reads = {
      {"SELECT secret_hash FROM api_keys", "api_keys"},
      {"SELECT count(*) FROM api_keys", "api_keys"},
      {"SELECT * FROM API_KEYS", "api_keys"},
      {"WITH k AS (SELECT * FROM api_keys) SELECT * FROM k", "api_keys"},
      {"SELECT id FROM images WHERE id IN (SELECT id FROM api_keys)", "api_keys"},
      {"SELECT response_json FROM idempotency", "idempotency"},
      {"SELECT count(*) FROM idempotency", "idempotency"},
  };
  for (const auto& [sql, table] : reads) {
    auto r = store_->Query(sql, {}, 10, 10s);
    ASSERT_FALSE(r.ok()) << sql;
    EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument) << sql;
    EXPECT_NE(r.error().message.find(table), std::string::npos) << sql << ": " << r.error().message;
    EXPECT_EQ(r.error().message.find("secret-hash"), std::string::npos);
  }
  // Everything else an analyst needs stays readable.
  for (std::string table : {"images", "renditions", "processing_runs", "jobs", "schema_migrations", "daily_ingest",
                            "format_mix", "processing_latency"}) {
    auto r = store_->Query("SELECT count(*) FROM " + table, {}, 10, 10s);
    EXPECT_TRUE(r.ok()) << table << ": " << r.error().message;
  }
}

TEST_P(MetadataStoreContractTest, QueryStopsAtTheTimeout) {
  auto r = store_->Query("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c", {},
                         10, 100ms);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kUnavailable);
  EXPECT_NE(r.error().message.find("timeout of 100 ms"), std::string::npos) << r.error().message;
  // The connection is usable again afterwards.
  EXPECT_EQ(MustQuery("SELECT 1").rows_json.size(), 1u);
}

TEST_P(MetadataStoreContractTest, QueryCapsRows) {
  const std::string sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50) SELECT x FROM c";
  auto capped = store_->Query(sql, {}, 10, 10s);
  ASSERT_TRUE(capped.ok()) << capped.error().message;
  EXPECT_EQ(capped->rows_json.size(), 10u);
  EXPECT_TRUE(capped->truncated);
  EXPECT_EQ(capped->rows_json[9][0], "10");
  auto all = store_->Query(sql, {}, 50, 10s);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->rows_json.size(), 50u);
  EXPECT_FALSE(all->truncated);
  // A query that would return rows for much longer than the timeout stops at the cap, well within it.
  auto endless = store_->Query("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c", {},
                               5, 10s);
  ASSERT_TRUE(endless.ok()) << endless.error().message;
  EXPECT_EQ(endless->rows_json.size(), 5u);
  EXPECT_TRUE(endless->truncated);
  EXPECT_EQ(MustQuery("SELECT 1").rows_json.size(), 1u);
}

TEST_P(MetadataStoreContractTest, AnalysisViews) {
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

  auto latency = MustQuery("SELECT day, pipeline, runs, avg_seconds, p50_seconds, p95_seconds, max_seconds, "
                           "p99_seconds FROM processing_latency ORDER BY day");
  ASSERT_EQ(latency.rows_json.size(), 2u);
  auto number = [](const std::string& cell) { return std::stod(cell); };
  const auto& d1 = latency.rows_json[0];
  EXPECT_EQ(std::vector<std::string>(d1.begin(), d1.begin() + 3),
            (std::vector<std::string>{"\"2026-01-01\"", "\"default\"", "20"}));
  EXPECT_DOUBLE_EQ(number(d1[3]), 10.5);
  // Nearest rank on both backends (migration 3): the value at rank ceil(p * 20 / 100), never an interpolation.
  EXPECT_DOUBLE_EQ(number(d1[4]), 10);
  EXPECT_DOUBLE_EQ(number(d1[5]), 19);
  EXPECT_DOUBLE_EQ(number(d1[6]), 20);
  EXPECT_DOUBLE_EQ(number(d1[7]), 20);
  EXPECT_EQ(latency.rows_json[1],
            (std::vector<std::string>{"\"2026-01-02\"", "\"default\"", "1", "3", "3", "3", "3", "3"}));
}

TEST_P(MetadataStoreContractTest, PercentilesAreNearestRankOnEveryBackend) {
  // 101 runs (shuffled), each 10% longer than the one before, so no two share a 5% histogram bucket and the
  // percentiles are exact: p50 is rank 51, p95 rank 96, p99 rank 100 (ceil(p * 101 / 100)).
  ImageRecord image = BareImage(At("2026-01-03T00:00:00Z"));
  ASSERT_TRUE(store_->InsertImage(image, std::nullopt).ok());
  std::vector<double> seconds(101);
  seconds[0] = 0.002;
  for (size_t i = 1; i < seconds.size(); ++i) seconds[i] = seconds[i - 1] * 1.1;
  for (int i = 0; i < 101; ++i) {
    ASSERT_TRUE(store_->RecordFailure(image.id, Run(image.id, "processed", seconds[(i * 37) % 101],
                                                    At("2026-01-03T08:00:00Z")),
                                      false).ok());
  }
  auto latency = MustQuery("SELECT runs, p50_seconds, p95_seconds, p99_seconds, max_seconds, avg_seconds "
                           "FROM processing_latency");
  ASSERT_EQ(latency.rows_json.size(), 1u);
  const auto& row = latency.rows_json[0];
  EXPECT_EQ(row[0], "101");
  EXPECT_DOUBLE_EQ(std::stod(row[1]), seconds[50]);
  EXPECT_DOUBLE_EQ(std::stod(row[2]), seconds[95]);
  EXPECT_DOUBLE_EQ(std::stod(row[3]), seconds[99]);
  EXPECT_DOUBLE_EQ(std::stod(row[4]), seconds[100]);
  double sum = 0;
  for (double s : seconds) sum += s;
  EXPECT_NEAR(std::stod(row[5]), sum / 101, 1e-9);
}

TEST_P(MetadataStoreContractTest, PercentilesOfCloseRunsAreWithinTheirBucket) {
  // 200 runs 0.5% apart on one day: many share a bucket, so a percentile is the longest run of the bucket holding
  // the nearest-rank run: never below it, at most 5% above.
  ImageRecord image = BareImage(At("2026-01-03T00:00:00Z"));
  ASSERT_TRUE(store_->InsertImage(image, std::nullopt).ok());
  std::vector<double> seconds(200);
  for (size_t i = 0; i < seconds.size(); ++i) seconds[i] = 0.8 * std::pow(1.005, static_cast<double>(i));
  for (size_t i = 0; i < seconds.size(); ++i) {
    ASSERT_TRUE(store_->RecordFailure(image.id, Run(image.id, "processed", seconds[(i * 67) % 200],
                                                    At("2026-01-03T08:00:00Z") + std::chrono::minutes(i)),
                                      false).ok());
  }
  auto latency = MustQuery("SELECT p50_seconds, p95_seconds, p99_seconds FROM processing_latency");
  ASSERT_EQ(latency.rows_json.size(), 1u);
  const int ranks[] = {100, 190, 198};  // ceil(p * 200 / 100), 1-based
  for (int i = 0; i < 3; ++i) {
    const double exact = seconds[ranks[i] - 1];
    const double reported = std::stod(latency.rows_json[0][i]);
    EXPECT_GE(reported, exact) << "p" << ranks[i] / 2;
    EXPECT_LE(reported, exact * 1.05 * (1 + 1e-12)) << "p" << ranks[i] / 2;
    EXPECT_TRUE(std::find(seconds.begin(), seconds.end(), reported) != seconds.end()) << reported << " is not a run";
  }
}

TEST_P(MetadataStoreContractTest, RollupsAgreeWithTheRowsThroughEveryChange) {
  // Every path that changes an image, over several hours, sources and formats; then the rollups must say what
  // counting the rows directly says.
  const char* sources[] = {"upload", "stream-a", "stream-b"};
  const char* formats[] = {"jpeg", "png", "webp"};
  std::vector<ImageRecord> images;
  for (int i = 0; i < 36; ++i) {
    ImageRecord image = BareImage(At("2026-01-01T00:00:00Z") + std::chrono::minutes(37 * i), sources[i % 3]);
    image.format = formats[(i / 3) % 3];
    image.bytes = 1000 + 137 * static_cast<uint64_t>(i);
    image.width = 100 * (i + 1);
    image.height = 90 * (i + 1);
    image.expires_at = i % 5 == 0 ? At("2026-01-05T00:00:00Z") : At("2099-01-01T00:00:00Z");
    ASSERT_TRUE(store_->InsertImage(image, std::nullopt).ok());
    images.push_back(image);
  }
  auto rendition = [](const ImageRecord& image, const char* name, uint64_t bytes) {
    RenditionRecord r;
    r.image_id = image.id;
    r.name = name;
    r.key = image.id.value() + "/" + name;
    r.format = "jpeg";
    r.content_type = "image/jpeg";
    r.width = 10;
    r.height = 10;
    r.bytes = bytes;
    r.created_at = image.received_at;
    return r;
  };
  for (size_t i = 0; i < images.size(); ++i) {
    const ImageRecord& image = images[i];
    const TimePoint done = image.received_at + 3s;
    switch (i % 6) {
      case 0: break;  // still queued
      case 1: ASSERT_TRUE(store_->MarkProcessing(image.id).ok()); break;
      case 2:         // processed, then processed again with a bigger rendition (the upsert path)
      case 3:
        ASSERT_TRUE(store_->MarkProcessing(image.id).ok());
        ASSERT_TRUE(store_->RecordProcessed(image.id, 42, "#102030",
                                            {rendition(image, "a", 100 + i), rendition(image, "b", 50)},
                                            Run(image.id, "processed", 0.01 * static_cast<double>(i + 1), done))
                        .ok());
        if (i % 6 == 3) {
          ASSERT_TRUE(store_->RecordProcessed(image.id, 42, "#102030", {rendition(image, "a", 900 + i)},
                                              Run(image.id, "processed", 0.5, done + 1s, 2))
                          .ok());
        }
        break;
      case 4:  // a retried failure, then a final one
        ASSERT_TRUE(store_->RecordFailure(image.id, Run(image.id, "retry", 0.2, done), false).ok());
        ASSERT_TRUE(store_->RecordFailure(image.id, Run(image.id, "failed", 0.3, done + 1s, 2), true).ok());
        break;
      case 5:
        ASSERT_TRUE(store_->RecordFailure(image.id, Run(image.id, "retry", 0.2, done), false).ok());
        break;
    }
    if (i % 7 == 2) ASSERT_TRUE(store_->MarkExpired(image.id, done + 1h).ok());
    if (i % 11 == 3) ASSERT_TRUE(store_->MarkDeleted(image.id, done + 2h).ok());
  }
  ASSERT_TRUE(store_->CompactRollups().ok());
  // A change after the compaction, so both folded and fresh rows are summed.
  ASSERT_TRUE(store_->MarkExpired(images[6].id, At("2026-01-03T00:00:00Z")).ok());

  const std::string big = backend_->Param(1) == "?1" ? "INTEGER" : "bigint";
  auto cast = [&](const std::string& e) { return "CAST(" + e + " AS " + big + ")"; };
  const std::string live = "i.status NOT IN ('expired', 'deleted')";
  auto rolled = MustQuery(
      "SELECT source, format, " + cast("sum(images)") + ", " + cast("sum(bytes)") + ", " + cast("sum(processed)") +
      ", " + cast("sum(failed)") + ", " + cast("sum(in_progress)") + ", " + cast("sum(live_images)") + ", " +
      cast("sum(live_bytes)") + ", " + cast("sum(live_renditions)") + ", " + cast("sum(live_rendition_bytes)") + ", " +
      cast("sum(deleted_images)") + ", " + cast("sum(deleted_bytes)") +
      " FROM images_hourly GROUP BY source, format HAVING sum(images) > 0 ORDER BY source, format");
  auto direct = MustQuery(
      "SELECT i.source, i.format, " + cast("count(*)") + ", " + cast("sum(i.bytes)") + ", " +
      cast("sum(CASE WHEN i.processed_at IS NOT NULL THEN 1 ELSE 0 END)") + ", " +
      cast("sum(CASE WHEN i.processed_at IS NULL AND i.error IS NOT NULL THEN 1 ELSE 0 END)") + ", " +
      cast("sum(CASE WHEN i.status IN ('queued', 'processing') THEN 1 ELSE 0 END)") + ", " +
      cast("sum(CASE WHEN " + live + " THEN 1 ELSE 0 END)") + ", " +
      cast("sum(CASE WHEN " + live + " THEN i.bytes ELSE 0 END)") + ", " +
      cast("sum(CASE WHEN " + live + " THEN coalesce(r.objects, 0) ELSE 0 END)") + ", " +
      cast("sum(CASE WHEN " + live + " THEN coalesce(r.bytes, 0) ELSE 0 END)") + ", " +
      cast("sum(CASE WHEN i.status = 'deleted' THEN 1 ELSE 0 END)") + ", " +
      cast("sum(CASE WHEN i.status = 'deleted' THEN i.bytes ELSE 0 END)") +
      " FROM images AS i LEFT JOIN (SELECT image_id, count(*) AS objects, sum(bytes) AS bytes FROM renditions"
      " GROUP BY image_id) AS r ON r.image_id = i.id GROUP BY i.source, i.format ORDER BY i.source, i.format");
  EXPECT_EQ(rolled.rows_json, direct.rows_json);
  EXPECT_EQ(rolled.rows_json.size(), 9u);

  // The views over the rollups, against the rows.
  EXPECT_EQ(MustQuery("SELECT format, " + cast("images") + ", " + cast("bytes") + " FROM format_mix ORDER BY 1")
                .rows_json,
            MustQuery("SELECT format, " + cast("count(*)") + ", " + cast("sum(bytes)") +
                      " FROM images GROUP BY 1 ORDER BY 1")
                .rows_json);
  EXPECT_EQ(MustQuery("SELECT " + cast("count(*)") + ", " + cast("sum(runs)") + " FROM processing_latency")
                .rows_json[0][1],
            MustQuery("SELECT " + cast("count(*)") + " FROM processing_runs WHERE status = 'processed'")
                .rows_json[0][0]);
  EXPECT_EQ(MustQuery("SELECT container, " + cast("objects") + ", " + cast("bytes") +
                      " FROM stored_bytes ORDER BY container")
                .rows_json,
            MustQuery("SELECT 'originals' AS c, " + cast("count(*)") + ", " + cast("coalesce(sum(bytes), 0)") +
                      " FROM images AS i WHERE " + live + " UNION ALL SELECT 'renditions', " + cast("count(*)") +
                      ", " + cast("coalesce(sum(r.bytes), 0)") +
                      " FROM renditions AS r JOIN images AS i ON i.id = r.image_id WHERE " + live + " ORDER BY 1")
                .rows_json);
  EXPECT_EQ(MustQuery("SELECT " + cast("sum(images)") + ", " + cast("sum(bytes)") + " FROM upcoming_expirations")
                .rows_json,
            MustQuery("SELECT " + cast("count(*)") + ", " + cast("sum(bytes)") + " FROM images AS i WHERE " + live)
                .rows_json);
  EXPECT_EQ(MustQuery("SELECT count(*) FROM upcoming_expirations").rows_json[0][0], "2");  // 2026-01-05, 2099-01-01
  // blob_state_counts: the same numbers as counting images_with_blob_state row by row (the clock of the database is
  // now, after every expires_at of 2026 and before 2099).
  EXPECT_EQ(MustQuery("SELECT blob_state, " + cast("images") + ", " + cast("bytes") +
                      " FROM blob_state_counts WHERE images > 0 ORDER BY 1")
                .rows_json,
            MustQuery("SELECT blob_state, " + cast("count(*)") + ", " + cast("sum(bytes)") +
                      " FROM images_with_blob_state GROUP BY 1 ORDER BY 1")
                .rows_json);
}

TEST_P(MetadataStoreContractTest, LegalHoldsKeepImagesFromRetentionUntilReleased) {
  const TimePoint t0 = At("2026-01-01T00:00:00Z");
  ImageRecord held = BareImage(t0);
  ImageRecord other = BareImage(t0 + 1s);
  ImageRecord gone = BareImage(t0 + 2s);
  for (ImageRecord* image : {&held, &other, &gone}) {
    image->expires_at = t0 + 24h;
    ASSERT_TRUE(store_->InsertImage(*image, std::nullopt).ok());
  }
  ASSERT_TRUE(store_->MarkExpired(gone.id, t0 + 25h).ok());

  auto hold = store_->SetLegalHold(held.id, "case 42", "k_admin", t0 + 1h);
  ASSERT_TRUE(hold.ok()) << hold.error().message;
  EXPECT_EQ(hold->reason, "case 42");
  // Setting it again keeps the first hold; an expired image cannot be held; an unknown one is not found.
  auto again = store_->SetLegalHold(held.id, "other reason", "k_other", t0 + 2h);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->reason, "case 42");
  EXPECT_EQ(again->held_by, "k_admin");
  EXPECT_EQ(again->held_at, t0 + 1h);
  EXPECT_EQ(store_->SetLegalHold(gone.id, "late", "k_admin", t0 + 2h).error().kind, ErrorKind::kConflict);
  EXPECT_EQ(store_->SetLegalHold(NewImageId(t0), "none", "k_admin", t0).error().kind, ErrorKind::kNotFound);

  auto expired = store_->FindExpired(t0 + 48h, 100);
  ASSERT_TRUE(expired.ok());
  ASSERT_EQ(expired->size(), 1u);
  EXPECT_EQ((*expired)[0].id, other.id);
  auto holds = store_->ListLegalHolds();
  ASSERT_TRUE(holds.ok());
  ASSERT_EQ(holds->size(), 1u);
  EXPECT_EQ((*holds)[0].image_id, held.id);
  EXPECT_EQ(MustQuery("SELECT image_id, reason, held_by FROM images_on_hold").rows_json,
            (std::vector<std::vector<std::string>>{{"\"" + held.id.value() + "\"", "\"case 42\"", "\"k_admin\""}}));
  // Past its expires_at (2026), held: 'held', not 'expired'.
  EXPECT_EQ(MustQuery("SELECT blob_state FROM images_with_blob_state WHERE id = " + P(1),
                      {"\"" + held.id.value() + "\""})
                .rows_json,
            (std::vector<std::vector<std::string>>{{"\"held\""}}));
  EXPECT_EQ(MustQuery("SELECT blob_state, images FROM blob_state_counts ORDER BY 1").rows_json,
            (std::vector<std::vector<std::string>>{{"\"deleted\"", "0"}, {"\"expired\"", "2"}, {"\"held\"", "1"},
                                                   {"\"present\"", "0"}}));

  ASSERT_TRUE(store_->ReleaseLegalHold(held.id, "k_admin", t0 + 3h).ok());
  EXPECT_EQ(store_->ReleaseLegalHold(held.id, "k_admin", t0 + 3h).error().kind, ErrorKind::kNotFound);
  EXPECT_FALSE(store_->FindLegalHold(held.id)->has_value());
  expired = store_->FindExpired(t0 + 48h, 100);
  ASSERT_TRUE(expired.ok());
  EXPECT_EQ(expired->size(), 2u);
  // The history stays: who held it, who released it.
  EXPECT_EQ(backend_->Count("SELECT count(*) FROM legal_holds WHERE released_at IS NOT NULL AND released_by = "
                            "'k_admin'"),
            1);
}

TEST_P(MetadataStoreContractTest, HourlyIngestAndHistograms) {
  auto add = [&](const char* at, std::string source, uint64_t bytes, int width, int height) {
    ImageRecord image = BareImage(At(at), std::move(source));
    image.bytes = bytes;
    image.width = width;
    image.height = height;
    ASSERT_TRUE(store_->InsertImage(image, std::nullopt).ok());
  };
  add("2026-01-01T10:00:00Z", "upload", 1, 10, 20);               // [1, 2) bytes; 0-1 MP
  add("2026-01-01T10:59:59.999Z", "upload", 1000, 1000, 1000);    // [512, 1024); exactly 1 MP: 1-2
  add("2026-01-01T10:30:00Z", "stream-a", 1023, 1999, 1000);      // [512, 1024); 1-2 MP
  add("2026-01-01T11:00:00Z", "upload", 1024, 4032, 3024);        // [1024, 2048); 12.2 MP: 12-24
  add("2026-01-02T23:15:00Z", "upload", 3000000, 10000, 6000);    // [2^21, 2^22); 60 MP: 50 and up

  auto hourly = MustQuery("SELECT hour, source, images, bytes FROM hourly_ingest ORDER BY hour, source");
  EXPECT_EQ(hourly.rows_json, (std::vector<std::vector<std::string>>{
                                  {"\"2026-01-01T10:00:00.000Z\"", "\"stream-a\"", "1", "1023"},
                                  {"\"2026-01-01T10:00:00.000Z\"", "\"upload\"", "2", "1001"},
                                  {"\"2026-01-01T11:00:00.000Z\"", "\"upload\"", "1", "1024"},
                                  {"\"2026-01-02T23:00:00.000Z\"", "\"upload\"", "1", "3000000"},
                              }));
  auto sizes = MustQuery("SELECT min_bytes, below_bytes, images, bytes FROM size_histogram ORDER BY min_bytes");
  EXPECT_EQ(sizes.rows_json, (std::vector<std::vector<std::string>>{
                                 {"1", "2", "1", "1"},
                                 {"512", "1024", "2", "2023"},
                                 {"1024", "2048", "1", "1024"},
                                 {"2097152", "4194304", "1", "3000000"},
                             }));
  auto resolution = MustQuery(
      "SELECT min_megapixels, below_megapixels, images FROM resolution_histogram ORDER BY min_megapixels");
  EXPECT_EQ(resolution.rows_json, (std::vector<std::vector<std::string>>{
                                      {"0", "1", "1"}, {"1", "2", "2"}, {"12", "24", "1"}, {"50", "null", "1"}}));
}

TEST_P(MetadataStoreContractTest, FailuresStoredBytesAndExpirations) {
  const TimePoint base = At("2026-01-01T00:00:00Z");
  std::vector<ImageRecord> images;
  for (int i = 0; i < 4; ++i) {
    ImageRecord image = BareImage(base + std::chrono::minutes(i));
    image.bytes = 1000 * (i + 1);                                   // 1000, 2000, 3000, 4000
    image.expires_at = At(i < 2 ? "2099-03-01T05:00:00Z" : "2099-03-02T05:00:00Z");
    ASSERT_TRUE(store_->InsertImage(image, std::nullopt).ok());
    images.push_back(image);
  }
  // Image 0: two retried attempts and a final failure with the same error; image 1: one retried timeout.
  for (int attempt = 1; attempt <= 3; ++attempt) {
    ProcessingRun run = Run(images[0].id, attempt == 3 ? "failed" : "retrying", 1,
                            base + std::chrono::minutes(10 * attempt), attempt);
    run.error = "decode: not a JPEG";
    ASSERT_TRUE(store_->RecordFailure(images[0].id, run, attempt == 3).ok());
  }
  ProcessingRun timeout = Run(images[1].id, "retrying", 30, base + 5min);
  timeout.error = "timeout";
  ASSERT_TRUE(store_->RecordFailure(images[1].id, timeout, false).ok());
  // Images 2 and 3 processed with two renditions each; image 3 then expires.
  for (int i : {2, 3}) {
    std::vector<RenditionRecord> renditions = {
        {images[i].id, "thumb-256", "r/a" + std::to_string(i), "jpeg", "image/jpeg", 256, 200, 100, base},
        {images[i].id, "large-1024", "r/b" + std::to_string(i), "jpeg", "image/jpeg", 1024, 800, 700, base}};
    ASSERT_TRUE(
        store_->RecordProcessed(images[i].id, 1, "#000000", renditions, Run(images[i].id, "processed", 1, base)).ok());
  }
  ASSERT_TRUE(store_->MarkExpired(images[3].id, base + 1h).ok());

  auto failures = MustQuery("SELECT pipeline, error, runs, images, final_failures, last_at FROM failures_by_error "
                            "ORDER BY error");
  EXPECT_EQ(failures.rows_json,
            (std::vector<std::vector<std::string>>{
                {"\"default\"", "\"decode: not a JPEG\"", "3", "1", "1", "\"2026-01-01T00:30:00.000Z\""},
                {"\"default\"", "\"timeout\"", "1", "1", "0", "\"2026-01-01T00:05:00.000Z\""},
            }));
  // Image 3's blobs are gone: only images 0..2 and image 2's renditions are stored.
  auto stored = MustQuery("SELECT container, objects, bytes FROM stored_bytes ORDER BY container");
  EXPECT_EQ(stored.rows_json, (std::vector<std::vector<std::string>>{{"\"originals\"", "3", "6000"},
                                                                     {"\"renditions\"", "2", "800"}}));
  auto expirations = MustQuery("SELECT day, images, bytes FROM upcoming_expirations ORDER BY day");
  EXPECT_EQ(expirations.rows_json, (std::vector<std::vector<std::string>>{{"\"2099-03-01\"", "2", "3000"},
                                                                          {"\"2099-03-02\"", "1", "3000"}}));
}

TEST_P(MetadataStoreContractTest, BlobStateSaysWhichImagesCanStillBeOpened) {
  // The view compares expires_at with the database's own clock (the real time), not the store's FakeClock.
  const TimePoint base = At("2026-01-01T00:00:00Z");
  std::vector<ImageRecord> images;
  for (int i = 0; i < 4; ++i) {
    ImageRecord image = BareImage(base + std::chrono::minutes(i));
    image.expires_at = At(i == 1 ? "2026-01-08T00:00:00Z" : "2099-01-01T00:00:00Z");
    ASSERT_TRUE(store_->InsertImage(image, std::nullopt).ok());
    images.push_back(image);
  }
  ASSERT_TRUE(store_->MarkExpired(images[2].id, base + 1h).ok());  // swept by retention
  ASSERT_TRUE(store_->MarkDeleted(images[3].id, base + 1h).ok());  // deleted by an admin
  // Image 0 is live; image 1 is past expires_at but not swept yet: the API already refuses it.
  auto states = MustQuery("SELECT id, status, blob_state FROM images_with_blob_state ORDER BY id");
  EXPECT_EQ(states.rows_json, (std::vector<std::vector<std::string>>{
                                  {"\"" + images[0].id.value() + "\"", "\"queued\"", "\"present\""},
                                  {"\"" + images[1].id.value() + "\"", "\"queued\"", "\"expired\""},
                                  {"\"" + images[2].id.value() + "\"", "\"expired\"", "\"expired\""},
                                  {"\"" + images[3].id.value() + "\"", "\"deleted\"", "\"deleted\""},
                              }));
  // Every column of images is there too, under the same name.
  EXPECT_EQ(MustQuery("SELECT count(*) FROM images_with_blob_state AS v JOIN images AS i ON i.id = v.id "
                      "WHERE v.bytes = i.bytes AND v.received_at = i.received_at AND v.expires_at = i.expires_at "
                      "AND v.user_metadata = i.user_metadata AND v.dominant_colour IS NULL")
                .rows_json[0][0],
            "4");
}

TEST_P(MetadataStoreContractTest, ASecondStoreOnTheSameDatabaseSeesCommitsAndCanWrite) {
  auto other = backend_->OpenAnother(clock_);  // as `imgpipe keys create` would, while serve runs
  ASSERT_TRUE(other);
  ASSERT_TRUE(other->Migrate().ok());

  ImageRecord image = BareImage(clock_.Now());
  ASSERT_TRUE(store_->InsertImage(image, std::nullopt).ok());
  EXPECT_EQ(other->GetImage(image.id)->sha256, image.sha256);

  ASSERT_TRUE(other->CreateApiKey({"k_cli", "cli-hash", Role::kUploader, "cli", clock_.Now(), std::nullopt}).ok());
  auto key = store_->FindApiKeyByHash("cli-hash");
  ASSERT_TRUE(key.ok()) << key.error().message;
  EXPECT_EQ(key->role, Role::kUploader);
  EXPECT_EQ(store_->CountApiKeys().value(), 1);
  EXPECT_TRUE(other->Ping().ok());
  EXPECT_TRUE(store_->Ping().ok());
}

INSTANTIATE_TEST_SUITE_P(Backends, MetadataStoreContractTest, ::testing::Values("sqlite", "postgres"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace imgpipe
