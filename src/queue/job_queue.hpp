#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "core/clock.hpp"
#include "core/result.hpp"
#include "core/records.hpp"

namespace imgpipe {

//! Jobs to process images. Enqueueing is not here: a job is written with its image row
//! (MetadataStore::InsertImage), so an accepted image always has a job. Embedded backend: a table in the SQLite
//! warehouse (src/queue/embedded). All methods thread-safe.
class JobQueue {
 public:
  virtual ~JobQueue() = default;

  //! Leases up to `max` ready jobs to `owner` until now + `lease`. A job whose lease ran out is ready again, so a
  //! crashed worker's jobs are retried. Every lease counts as an attempt (Job::attempts is the count before this
  //! one), so an image that kills its worker every time is given up after queue.max_attempts, not retried forever. Waits up to `wait` for work when none is ready (woken early by Wake()).
  virtual Result<std::vector<Job>> Lease(const std::string& owner, size_t max, std::chrono::milliseconds lease,
                                         std::chrono::milliseconds wait) = 0;
  //! The job is done; it will not be leased again.
  virtual Status Ack(const Job& job) = 0;
  //! The job is given up (a permanent failure, or queue.max_attempts reached) and the image marked failed: it will
  //! not be leased again. Backends with a dead-letter place (Kafka's jobs .dlq topic) put it there with `reason`;
  //! the others just ack.
  virtual Status DeadLetter(const Job& job, const std::string& reason) {
    (void)reason;
    return Ack(job);
  }
  //! The attempt failed; the job becomes ready again at `retry_at` (its lease already counted the attempt).
  virtual Status Retry(const Job& job, TimePoint retry_at, const std::string& error) = 0;
  //! Returns the leases of `owner` to the queue on a graceful shutdown, uncounting their attempts; with an empty
  //! owner, returns every lease (after a crash: those attempts stay counted).
  virtual Status ReleaseLeases(const std::string& owner) = 0;
  //! Wakes waiters in Lease(); call after inserting a job.
  virtual void Wake() = 0;
  //! Jobs ready or leased, for /metrics.
  virtual Result<int64_t> Depth() = 0;
  virtual Status Ping() = 0;
};

}  // namespace imgpipe
