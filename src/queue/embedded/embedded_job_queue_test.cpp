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

// The JobQueue semantics are tested once, in ../job_queue_contract_test.cpp, on every backend. This file keeps the
// embedded queue's own cases: a second process on the same SQLite file, and its wake-up and polling.

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

}  // namespace
}  // namespace imgpipe
