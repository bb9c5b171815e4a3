#include "queue/embedded/embedded_job_queue.hpp"

#include <gtest/gtest.h>

#include <stdlib.h>

#include <filesystem>
#include <future>
#include <mutex>
#include <set>
#include <thread>

#include "warehouse/sqlite/sqlite_metadata_store.hpp"

namespace imgpipe {
namespace {

using namespace std::chrono_literals;

TimePoint At(const char* rfc3339) {
  TimePoint t;
  EXPECT_TRUE(ParseRfc3339(rfc3339, &t)) << rfc3339;
  return t;
}

class EmbeddedJobQueueTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "imgpipe-queue-XXXXXX").string();
    dir_ = mkdtemp(pattern.data());
    path_ = dir_ / "warehouse.db";
    auto db = SqliteDatabase::Open(path_);
    ASSERT_TRUE(db.ok()) << db.error().message;
    db_ = std::move(db).value();
    store_ = std::make_unique<SqliteMetadataStore>(*db_, clock_);
    ASSERT_TRUE(store_->Migrate().ok());
    queue_ = std::make_unique<EmbeddedJobQueue>(*db_, clock_);
  }
  void TearDown() override {
    queue_.reset();
    store_.reset();
    db_.reset();
    std::filesystem::remove_all(dir_);
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
    Status s = (store ? store : store_.get())->InsertImage(image, std::nullopt);
    EXPECT_TRUE(s.ok()) << s.error().message;
    return image.id;
  }

  std::vector<Job> MustLease(const std::string& owner, size_t max, std::chrono::milliseconds lease = 30s) {
    auto jobs = queue_->Lease(owner, max, lease, 0ms);
    EXPECT_TRUE(jobs.ok()) << jobs.error().message;
    return jobs.ok() ? jobs.value() : std::vector<Job>{};
  }

  std::filesystem::path dir_;
  std::filesystem::path path_;
  FakeClock clock_{At("2026-01-10T12:00:00Z")};
  std::unique_ptr<SqliteDatabase> db_;
  std::unique_ptr<SqliteMetadataStore> store_;
  std::unique_ptr<EmbeddedJobQueue> queue_;
};

TEST_F(EmbeddedJobQueueTest, LeasesOldestFirstAndAckRemoves) {
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

TEST_F(EmbeddedJobQueueTest, AnExpiredLeaseMakesTheJobReadyAgain) {
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

TEST_F(EmbeddedJobQueueTest, AGracefulReleaseDoesNotCountTheAttempt) {
  AddImage();
  auto leased = MustLease("draining-worker", 1);
  ASSERT_EQ(leased.size(), 1u);
  ASSERT_TRUE(queue_->ReleaseLeases("draining-worker").ok());
  auto again = MustLease("w2", 1);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].attempts, 0);
}

TEST_F(EmbeddedJobQueueTest, RetryWaitsUntilRetryAtAndCountsAttempts) {
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

TEST_F(EmbeddedJobQueueTest, ReleaseLeasesReturnsOneOwnersJobsOrAll) {
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

TEST_F(EmbeddedJobQueueTest, ConcurrentLeasersNeverShareAJob) {
  constexpr int kJobs = 200;
  for (int i = 0; i < kJobs; ++i) AddImage(std::chrono::seconds(i));

  // A second SqliteDatabase on the same file leases too, as a worker process would.
  auto other_db = SqliteDatabase::Open(path_);
  ASSERT_TRUE(other_db.ok());
  EmbeddedJobQueue other_queue(**other_db, clock_);

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
  threads.emplace_back(work, std::ref(other_queue), "other-process");
  for (auto& t : threads) t.join();

  EXPECT_EQ(leased.size(), static_cast<size_t>(kJobs));
  EXPECT_EQ(std::set<int64_t>(leased.begin(), leased.end()).size(), static_cast<size_t>(kJobs));
  EXPECT_EQ(queue_->Depth().value(), 0);
}

TEST_F(EmbeddedJobQueueTest, WakeUnblocksAWaitingLease) {
  // Polling is set to an hour, so only Wake() can end this wait before its 30 s are up.
  EmbeddedJobQueue queue(*db_, clock_, EmbeddedJobQueue::Options{std::chrono::hours(1)});
  auto waiting = std::async(std::launch::async, [&] { return queue.Lease("w1", 1, 30s, 30s); });
  std::this_thread::sleep_for(100ms);  // let the lease start waiting (the test holds without it, but proves less)
  ImageId id = AddImage();
  queue.Wake();
  auto jobs = waiting.get();
  ASSERT_TRUE(jobs.ok()) << jobs.error().message;
  ASSERT_EQ(jobs->size(), 1u);
  EXPECT_EQ((*jobs)[0].image_id, id);
}

TEST_F(EmbeddedJobQueueTest, PollingSeesJobsInsertedByAnotherProcess) {
  auto other_db = SqliteDatabase::Open(path_);
  ASSERT_TRUE(other_db.ok());
  SqliteMetadataStore other_store(**other_db, clock_);
  auto waiting = std::async(std::launch::async, [&] { return queue_->Lease("w1", 1, 30s, 30s); });
  std::this_thread::sleep_for(100ms);
  ImageId id = AddImage(0s, &other_store);  // no Wake(): the other process cannot reach this queue's waiters
  auto jobs = waiting.get();
  ASSERT_TRUE(jobs.ok()) << jobs.error().message;
  ASSERT_EQ(jobs->size(), 1u);
  EXPECT_EQ((*jobs)[0].image_id, id);
}

TEST_F(EmbeddedJobQueueTest, ExpiringAnImageRemovesItsJob) {
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

}  // namespace
}  // namespace imgpipe
