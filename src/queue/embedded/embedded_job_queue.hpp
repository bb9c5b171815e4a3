#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

#include "core/clock.hpp"
#include "queue/job_queue.hpp"
#include "warehouse/sqlite/sqlite_database.hpp"

namespace imgpipe {

//! JobQueue over the `jobs` table of the SQLite warehouse (created by the warehouse migrations; run
//! MetadataStore::Migrate first). Leasing is one UPDATE ... RETURNING in a write transaction, so leasers in any
//! number of threads and processes never get the same job while its lease runs. Lease times come from `clock`;
//! waiting in Lease() is real time.
//! Lifetimes: `db` and `clock` must outlive the queue, and no thread may be inside Lease() when it is destroyed.
//!
//! Beyond JobQueue's contract:
//! - Jobs are leased oldest first (by enqueue order); a job is ready when not_before <= now and it has no lease or
//!   its lease_until <= now.
//! - Ack of a job that is gone (acked already, or its image expired) is ok. Retry of a job that is gone is kNotFound.
//! - Jobs written by other processes are seen within `poll_interval`, without Wake().
class EmbeddedJobQueue final : public JobQueue {
 public:
  struct Options {
    //! A waiting Lease() looks for jobs this often even when nobody calls Wake() (e.g. another process inserted them).
    std::chrono::milliseconds poll_interval{200};
  };

  EmbeddedJobQueue(SqliteDatabase& db, const Clock& clock, Options options);
  EmbeddedJobQueue(SqliteDatabase& db, const Clock& clock) : EmbeddedJobQueue(db, clock, Options{}) {}

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

  SqliteDatabase& db_;
  const Clock& clock_;
  const Options options_;
  std::mutex wake_mu_;
  std::condition_variable wake_cv_;
  uint64_t wakeups_ = 0;  //!< bumped by Wake(); a waiter that saw an older value wakes up
};

}  // namespace imgpipe
