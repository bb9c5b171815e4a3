#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

#include "core/clock.hpp"
#include "queue/job_queue.hpp"
#include "warehouse/postgres/postgres_database.hpp"

namespace imgpipe {

//! JobQueue over the `jobs` table of the PostgreSQL warehouse (created by its migrations; run
//! MetadataStore::Migrate first), which PostgresMetadataStore::InsertImage writes in the image's transaction: an
//! accepted image and its job commit together. Leasing is one UPDATE over the oldest ready rows picked with
//! FOR UPDATE SKIP LOCKED, so leasers in any number of threads and processes (and machines) never get the same job
//! while its lease runs, and never wait for each other. Lease times come from `clock`; waiting in Lease() is real time.
//! Lifetimes: `db` and `clock` must outlive the queue, and no thread may be inside Lease() when it is destroyed.
//!
//! Beyond JobQueue's contract (the same as EmbeddedJobQueue's):
//! - Jobs are leased oldest first (by enqueue order); a job is ready when not_before <= now and it has no lease or
//!   its lease_until <= now.
//! - Ack of a job that is gone (acked already, or its image expired) is ok. Retry of a job that is gone is kNotFound.
//! - Jobs written by other processes are seen within `poll_interval`, without Wake().
//! - ReleaseLeases("") returns every lease of the database: with several servers on one database, only a process
//!   that knows no other is running may call it. `imgpipe serve` does not (leases of a crashed server run out).
class PostgresJobQueue final : public JobQueue {
 public:
  struct Options {
    //! A waiting Lease() looks for jobs this often even when nobody calls Wake() (e.g. another process inserted them).
    std::chrono::milliseconds poll_interval{200};
  };

  PostgresJobQueue(PostgresDatabase& db, const Clock& clock, Options options);
  PostgresJobQueue(PostgresDatabase& db, const Clock& clock) : PostgresJobQueue(db, clock, Options{}) {}

  Result<std::vector<Job>> Lease(const std::string& owner, size_t max, std::chrono::milliseconds lease,
                                 std::chrono::milliseconds wait) override;
  Status Ack(const Job& job) override;
  Status Retry(const Job& job, TimePoint retry_at, const std::string& error) override;
  Status ReleaseLeases(const std::string& owner) override;
  void Wake() override;
  Result<int64_t> Depth() override;
  Status Ping() override;

 private:
  //! Leases what is ready now, without waiting.
  Result<std::vector<Job>> TryLease(const std::string& owner, size_t max, std::chrono::milliseconds lease);

  PostgresDatabase& db_;
  const Clock& clock_;
  const Options options_;
  std::mutex wake_mu_;
  std::condition_variable wake_cv_;
  uint64_t wakeups_ = 0;  //!< bumped by Wake(); a waiter that saw an older value wakes up
};

}  // namespace imgpipe
