// The JobQueue contract: one suite, the same assertions on every backend. The embedded queue (SQLite) always runs;
// the PostgreSQL queue runs when IMGPIPE_TEST_POSTGRES_URL names a server (a fresh schema per test), is skipped when
// it does not, and fails when IMGPIPE_REQUIRE_POSTGRES=1 (as under scripts/test) and the server is missing.
#include <gtest/gtest.h>

#include <stdlib.h>

#include <filesystem>
#include <future>
#include <mutex>
#include <set>
#include <thread>

#include "queue/embedded/embedded_job_queue.hpp"
#include "queue/postgres/postgres_job_queue.hpp"
#include "warehouse/postgres/postgres_metadata_store.hpp"
#include "warehouse/postgres/postgres_test_database.hpp"
#include "warehouse/sqlite/sqlite_metadata_store.hpp"

namespace imgpipe {
namespace {

using namespace std::chrono_literals;

TimePoint At(const char* rfc3339) {
  TimePoint t;
  EXPECT_TRUE(ParseRfc3339(rfc3339, &t)) << rfc3339;
  return t;
}

//! One backend: a warehouse (whose InsertImage enqueues) and queues on it. "Another process" is a second set of
//! connections to the same database.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual MetadataStore& store() = 0;
  virtual std::unique_ptr<JobQueue> NewQueue(std::chrono::milliseconds poll_interval) = 0;
  //! A queue and a store on their own connections to the same database, as another process would have.
  virtual std::pair<std::unique_ptr<JobQueue>, std::unique_ptr<MetadataStore>> OtherProcess() = 0;
};

class EmbeddedBackend final : public Backend {
 public:
  explicit EmbeddedBackend(const Clock& clock) : clock_(clock) {
    std::string pattern = (std::filesystem::temp_directory_path() / "imgpipe-queue-contract-XXXXXX").string();
    dir_ = mkdtemp(pattern.data());
    db_ = Open();
    store_ = std::make_unique<SqliteMetadataStore>(*db_, clock);
  }
  ~EmbeddedBackend() override {
    store_.reset();
    db_.reset();
    others_.clear();
    std::filesystem::remove_all(dir_);
  }
  MetadataStore& store() override { return *store_; }
  std::unique_ptr<JobQueue> NewQueue(std::chrono::milliseconds poll_interval) override {
    return std::make_unique<EmbeddedJobQueue>(*db_, clock_, EmbeddedJobQueue::Options{poll_interval});
  }
  std::pair<std::unique_ptr<JobQueue>, std::unique_ptr<MetadataStore>> OtherProcess() override {
    others_.push_back(Open());
    return {std::make_unique<EmbeddedJobQueue>(*others_.back(), clock_),
            std::make_unique<SqliteMetadataStore>(*others_.back(), clock_)};
  }

 private:
  std::unique_ptr<SqliteDatabase> Open() {
    auto db = SqliteDatabase::Open(dir_ / "warehouse.db");
    if (!db.ok()) throw std::runtime_error(db.error().message);
    return std::move(db).value();
  }
  const Clock& clock_;
  std::filesystem::path dir_;
  std::unique_ptr<SqliteDatabase> db_;
  std::unique_ptr<SqliteMetadataStore> store_;
  std::vector<std::unique_ptr<SqliteDatabase>> others_;
};

class PostgresBackend final : public Backend {
 public:
  PostgresBackend(std::unique_ptr<PostgresTestDatabase> database, const Clock& clock)
      : clock_(clock), database_(std::move(database)), db_(Open()),
        store_(std::make_unique<PostgresMetadataStore>(*db_, clock)) {}
  ~PostgresBackend() override {
    store_.reset();
    db_.reset();
    others_.clear();
  }
  MetadataStore& store() override { return *store_; }
  std::unique_ptr<JobQueue> NewQueue(std::chrono::milliseconds poll_interval) override {
    return std::make_unique<PostgresJobQueue>(*db_, clock_, PostgresJobQueue::Options{poll_interval});
  }
  std::pair<std::unique_ptr<JobQueue>, std::unique_ptr<MetadataStore>> OtherProcess() override {
    others_.push_back(Open());
    return {std::make_unique<PostgresJobQueue>(*others_.back(), clock_),
            std::make_unique<PostgresMetadataStore>(*others_.back(), clock_)};
  }

 private:
  std::unique_ptr<PostgresDatabase> Open() {
    PostgresDatabase::Options options;
    options.url = database_->url();
    auto db = PostgresDatabase::Open(options);
    if (!db.ok()) throw std::runtime_error(db.error().message);
    return std::move(db).value();
  }
  const Clock& clock_;
  std::unique_ptr<PostgresTestDatabase> database_;
  std::unique_ptr<PostgresDatabase> db_;
  std::unique_ptr<PostgresMetadataStore> store_;
  std::vector<std::unique_ptr<PostgresDatabase>> others_;
};

class JobQueueContractTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "embedded") {
      backend_ = std::make_unique<EmbeddedBackend>(clock_);
    } else {
      const PostgresTestEnv env = PostgresTestEnv::FromEnvironment();
      if (env.url.empty()) {
        if (env.required) FAIL() << "IMGPIPE_REQUIRE_POSTGRES=1 but " << PostgresTestEnv::kMissing;
        GTEST_SKIP() << PostgresTestEnv::kMissing;
      }
      auto database = PostgresTestDatabase::Create(env.url);
      ASSERT_TRUE(database.ok()) << "PostgreSQL at IMGPIPE_TEST_POSTGRES_URL: " << database.error().message;
      backend_ = std::make_unique<PostgresBackend>(std::move(database).value(), clock_);
    }
    store_ = &backend_->store();
    Status migrated = store_->Migrate();
    ASSERT_TRUE(migrated.ok()) << migrated.error().message;
    queue_ = backend_->NewQueue(200ms);
  }
  void TearDown() override {
    queue_.reset();
    backend_.reset();
  }

  //! Inserts an image (and so its job) received `offset` after the start, through `store` (default: ours).
  ImageId AddImage(std::chrono::seconds offset = 0s, MetadataStore* store = nullptr) {
    ImageRecord image;
    image.id = NewImageId(clock_.Now() + offset);
    image.sha256 = "00";
    image.received_at = clock_.Now() + offset;
    image.format = "jpeg";
    image.content_type = "image/jpeg";
    image.pipeline = "default";
    image.original_key = "originals/" + image.id.value();
    image.expires_at = clock_.Now() + 24h;
    Status s = (store ? store : store_)->InsertImage(image, std::nullopt);
    EXPECT_TRUE(s.ok()) << s.error().message;
    return image.id;
  }

  std::vector<Job> MustLease(const std::string& owner, size_t max, std::chrono::milliseconds lease = 30s) {
    auto jobs = queue_->Lease(owner, max, lease, 0ms);
    EXPECT_TRUE(jobs.ok()) << jobs.error().message;
    return jobs.ok() ? jobs.value() : std::vector<Job>{};
  }

  FakeClock clock_{At("2026-01-10T12:00:00Z")};
  std::unique_ptr<Backend> backend_;
  MetadataStore* store_ = nullptr;
  std::unique_ptr<JobQueue> queue_;
};

TEST_P(JobQueueContractTest, LeasesOldestFirstAndAckRemoves) {
  std::vector<ImageId> ids = {AddImage(0s), AddImage(1s), AddImage(2s)};
  EXPECT_EQ(queue_->Depth().value(), 3);

  auto first = MustLease("w1", 2);
  ASSERT_EQ(first.size(), 2u);
  EXPECT_EQ(first[0].image_id, ids[0]);
  EXPECT_EQ(first[1].image_id, ids[1]);
  EXPECT_EQ(first[0].attempts, 0);
  EXPECT_EQ(first[0].pipeline, "default");
  EXPECT_EQ(first[0].enqueued_at, clock_.Now());
  EXPECT_LT(first[0].id, first[1].id);

  auto second = MustLease("w2", 5);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].image_id, ids[2]);
  EXPECT_TRUE(MustLease("w3", 5).empty());
  EXPECT_EQ(queue_->Depth().value(), 3);  // leased jobs still count

  for (const Job& job : first) ASSERT_TRUE(queue_->Ack(job).ok());
  ASSERT_TRUE(queue_->Ack(first[0]).ok());  // acking twice is harmless
  EXPECT_EQ(queue_->Depth().value(), 1);

  // Acked jobs are gone for good, even after their lease would have run out.
  clock_.Advance(1h);
  auto after = MustLease("w4", 5);
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0].image_id, ids[2]);
  EXPECT_TRUE(MustLease("w5", 0).empty());
}

TEST_P(JobQueueContractTest, AnExpiredLeaseMakesTheJobReadyAgain) {
  AddImage();
  auto leased = MustLease("crashed-worker", 1, 30s);
  ASSERT_EQ(leased.size(), 1u);

  clock_.Advance(29s);
  EXPECT_TRUE(MustLease("w2", 1).empty());
  clock_.Advance(1s);  // lease_until <= now: free again
  auto again = MustLease("w2", 1);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].id, leased[0].id);
  EXPECT_EQ(again[0].attempts, 1);  // a lost lease counts: a worker that dies on an image must not loop forever
}

TEST_P(JobQueueContractTest, AGracefulReleaseDoesNotCountTheAttempt) {
  AddImage();
  auto leased = MustLease("draining-worker", 1);
  ASSERT_EQ(leased.size(), 1u);
  ASSERT_TRUE(queue_->ReleaseLeases("draining-worker").ok());
  auto again = MustLease("w2", 1);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].attempts, 0);
}

TEST_P(JobQueueContractTest, RetryWaitsUntilRetryAtAndCountsAttempts) {
  ImageId id = AddImage();
  auto leased = MustLease("w1", 1);
  ASSERT_EQ(leased.size(), 1u);
  ASSERT_TRUE(queue_->Retry(leased[0], clock_.Now() + 10s, "decoder timed out").ok());

  EXPECT_TRUE(MustLease("w1", 1).empty());
  clock_.Advance(9s);
  EXPECT_TRUE(MustLease("w1", 1).empty());
  clock_.Advance(1s);
  auto again = MustLease("w1", 1);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].image_id, id);
  EXPECT_EQ(again[0].attempts, 1);

  auto last_error = store_->Query("SELECT last_error, attempts FROM jobs", {}, 10, 10s);
  ASSERT_TRUE(last_error.ok()) << last_error.error().message;
  // The row counts the lease in progress too.
  EXPECT_EQ(last_error->rows_json[0], (std::vector<std::string>{"\"decoder timed out\"", "2"}));

  ASSERT_TRUE(queue_->Retry(again[0], clock_.Now(), "again").ok());
  auto third = MustLease("w1", 1);
  ASSERT_EQ(third.size(), 1u);
  EXPECT_EQ(third[0].attempts, 2);

  ASSERT_TRUE(queue_->Ack(third[0]).ok());
  Status gone = queue_->Retry(third[0], clock_.Now(), "late");
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().kind, ErrorKind::kNotFound);
}

TEST_P(JobQueueContractTest, ReleaseLeasesReturnsOneOwnersJobsOrAll) {
  AddImage(0s);
  AddImage(1s);
  AddImage(2s);
  auto a = MustLease("a", 1);
  auto b = MustLease("b", 2);
  ASSERT_EQ(a.size(), 1u);
  ASSERT_EQ(b.size(), 2u);

  ASSERT_TRUE(queue_->ReleaseLeases("a").ok());
  auto c = MustLease("c", 5);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].id, a[0].id);

  ASSERT_TRUE(queue_->ReleaseLeases("").ok());
  EXPECT_EQ(MustLease("d", 5).size(), 3u);
}

TEST_P(JobQueueContractTest, ConcurrentLeasersNeverShareAJob) {
  constexpr int kJobs = 200;
  for (int i = 0; i < kJobs; ++i) AddImage(std::chrono::seconds(i));

  // A second process leases too.
  auto [other_queue, other_store] = backend_->OtherProcess();

  std::mutex mu;
  std::vector<int64_t> leased;
  auto work = [&](JobQueue& queue, std::string owner) {
    while (true) {
      auto jobs = queue.Lease(owner, 3, 10min, 0ms);
      ASSERT_TRUE(jobs.ok()) << jobs.error().message;
      if (jobs->empty()) return;  // every job is leased or done: nothing more will become ready
      for (const Job& job : *jobs) {
        {
          std::lock_guard lock(mu);
          leased.push_back(job.id);
        }
        ASSERT_TRUE(queue.Ack(job).ok());
      }
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) threads.emplace_back(work, std::ref(*queue_), "w" + std::to_string(t));
  threads.emplace_back(work, std::ref(*other_queue), "other-process");
  for (auto& t : threads) t.join();

  EXPECT_EQ(leased.size(), static_cast<size_t>(kJobs));
  EXPECT_EQ(std::set<int64_t>(leased.begin(), leased.end()).size(), static_cast<size_t>(kJobs));
  EXPECT_EQ(queue_->Depth().value(), 0);
}

TEST_P(JobQueueContractTest, WakeUnblocksAWaitingLease) {
  // Polling is set to an hour, so only Wake() can end this wait before its 30 s are up.
  auto queue = backend_->NewQueue(std::chrono::hours(1));
  auto waiting = std::async(std::launch::async, [&] { return queue->Lease("w1", 1, 30s, 30s); });
  std::this_thread::sleep_for(100ms);  // let the lease start waiting (the test holds without it, but proves less)
  ImageId id = AddImage();
  queue->Wake();
  auto jobs = waiting.get();
  ASSERT_TRUE(jobs.ok()) << jobs.error().message;
  ASSERT_EQ(jobs->size(), 1u);
  EXPECT_EQ((*jobs)[0].image_id, id);
}

TEST_P(JobQueueContractTest, PollingSeesJobsInsertedByAnotherProcess) {
  auto [other_queue, other_store] = backend_->OtherProcess();
  auto waiting = std::async(std::launch::async, [&] { return queue_->Lease("w1", 1, 30s, 30s); });
  std::this_thread::sleep_for(100ms);
  ImageId id = AddImage(0s, other_store.get());  // no Wake(): the other process cannot reach this queue's waiters
  auto jobs = waiting.get();
  ASSERT_TRUE(jobs.ok()) << jobs.error().message;
  ASSERT_EQ(jobs->size(), 1u);
  EXPECT_EQ((*jobs)[0].image_id, id);
}

TEST_P(JobQueueContractTest, ExpiringAnImageRemovesItsJob) {
  ImageId keep = AddImage(0s);
  ImageId expire = AddImage(1s);
  auto leased = MustLease("w1", 2);
  ASSERT_EQ(leased.size(), 2u);
  ASSERT_TRUE(store_->MarkExpired(expire, clock_.Now()).ok());
  EXPECT_EQ(queue_->Depth().value(), 1);
  EXPECT_TRUE(queue_->Ack(leased[1]).ok());  // the worker's late ack is harmless
  ASSERT_TRUE(queue_->ReleaseLeases("w1").ok());
  auto rest = MustLease("w2", 5);
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].image_id, keep);
  EXPECT_TRUE(queue_->Ping().ok());
}

INSTANTIATE_TEST_SUITE_P(Backends, JobQueueContractTest, ::testing::Values("embedded", "postgres"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace imgpipe
