#include "queue/embedded/embedded_job_queue.hpp"

#include <algorithm>

namespace imgpipe {

namespace {

// A job is ready when it may run (not_before) and nobody holds a live lease on it. Times are RFC 3339 text in one
// fixed format, so comparing strings compares times.
constexpr std::string_view kReadyCondition =
    "not_before <= ?1 AND (lease_until IS NULL OR lease_until <= ?1)";

}  // namespace

EmbeddedJobQueue::EmbeddedJobQueue(SqliteDatabase& db, const Clock& clock, Options options)
    : db_(db), clock_(clock), options_(options) {}

Result<std::vector<Job>> EmbeddedJobQueue::TryLease(const std::string& owner, size_t max,
                                                    std::chrono::milliseconds lease) {
  const TimePoint now = clock_.Now();
  const std::string now_text = FormatRfc3339(now);

  // Idle workers poll; asking a reader first keeps them from queueing behind uploads for the write lock when there
  // is nothing to lease.
  bool any_ready = false;
  IMGPIPE_TRY(db_.Read([&](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(
        auto stmt, conn.Prepare("SELECT EXISTS (SELECT 1 FROM jobs WHERE " + std::string(kReadyCondition) + ")"));
    stmt.BindText(1, now_text);
    IMGPIPE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    any_ready = row && stmt.Int(0) != 0;
    return Ok();
  }));
  if (!any_ready) return std::vector<Job>();

  std::vector<Job> jobs;
  IMGPIPE_TRY(db_.Write([&](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(
        auto stmt, conn.Prepare("UPDATE jobs SET lease_owner = ?2, lease_until = ?3, attempts = attempts + 1 WHERE id IN "
                                "(SELECT id FROM jobs WHERE " + std::string(kReadyCondition) +
                                " ORDER BY id LIMIT ?4) "
                                "RETURNING id, image_id, pipeline, attempts - 1, enqueued_at"));
    stmt.BindText(1, now_text)
        .BindText(2, owner)
        .BindText(3, FormatRfc3339(now + lease))
        .BindInt(4, static_cast<int64_t>(std::min<size_t>(max, INT64_MAX)));
    while (true) {
      IMGPIPE_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) return Ok();
      Job job;
      job.id = stmt.Int(0);
      job.image_id = ImageId(stmt.Text(1));
      job.pipeline = stmt.Text(2);
      job.attempts = static_cast<int>(stmt.Int(3));
      std::string enqueued = stmt.Text(4);
      if (!ParseRfc3339(enqueued, &job.enqueued_at)) {
        return MakeError(ErrorKind::kInternal, "job " + std::to_string(job.id) + " has a malformed enqueued_at '" +
                                                   enqueued + "'; the database was modified outside imgpipe");
      }
      jobs.push_back(std::move(job));
    }
  }));
  // RETURNING gives rows in no promised order.
  std::sort(jobs.begin(), jobs.end(), [](const Job& a, const Job& b) { return a.id < b.id; });
  return jobs;
}

Result<std::vector<Job>> EmbeddedJobQueue::Lease(const std::string& owner, size_t max,
                                                 std::chrono::milliseconds lease, std::chrono::milliseconds wait) {
  if (max == 0) return std::vector<Job>();
  const auto deadline = std::chrono::steady_clock::now() + wait;
  while (true) {
    uint64_t seen;
    {
      std::lock_guard lock(wake_mu_);
      seen = wakeups_;
    }
    // A Wake() from here on changes wakeups_, so the wait below cannot miss it.
    IMGPIPE_ASSIGN_OR_RETURN(auto jobs, TryLease(owner, max, lease));
    const auto now = std::chrono::steady_clock::now();
    if (!jobs.empty() || now >= deadline) return jobs;
    std::unique_lock lock(wake_mu_);
    wake_cv_.wait_until(lock, std::min(deadline, now + options_.poll_interval), [&] { return wakeups_ != seen; });
  }
}

Status EmbeddedJobQueue::Ack(const Job& job) {
  return db_.Write([&](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto stmt, conn.Prepare("DELETE FROM jobs WHERE id = ?1"));
    stmt.BindInt(1, job.id);
    return stmt.Run();
  });
}

Status EmbeddedJobQueue::Retry(const Job& job, TimePoint retry_at, const std::string& error) {
  IMGPIPE_TRY(db_.Write([&](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(
        auto stmt, conn.Prepare("UPDATE jobs SET not_before = ?2, lease_owner = NULL, "
                                "lease_until = NULL, last_error = ?3 WHERE id = ?1"));
    stmt.BindInt(1, job.id).BindText(2, FormatRfc3339(retry_at)).BindText(3, error);
    IMGPIPE_TRY(stmt.Run());
    if (conn.Changes() == 0) {
      return MakeError(ErrorKind::kNotFound, "job " + std::to_string(job.id) + " for image " +
                                                 job.image_id.value() + " is no longer queued");
    }
    return Ok();
  }));
  Wake();
  return Ok();
}

Status EmbeddedJobQueue::ReleaseLeases(const std::string& owner) {
  IMGPIPE_TRY(db_.Write([&](SqliteConnection& conn) -> Status {
    if (owner.empty()) {
      IMGPIPE_ASSIGN_OR_RETURN(
          auto stmt, conn.Prepare("UPDATE jobs SET lease_owner = NULL, lease_until = NULL "
                                  "WHERE lease_owner IS NOT NULL OR lease_until IS NOT NULL"));
      return stmt.Run();
    }
    IMGPIPE_ASSIGN_OR_RETURN(
        auto stmt,
        conn.Prepare("UPDATE jobs SET lease_owner = NULL, lease_until = NULL, attempts = max(attempts - 1, 0) "
                     "WHERE lease_owner = ?1"));
    stmt.BindText(1, owner);
    return stmt.Run();
  }));
  Wake();
  return Ok();
}

void EmbeddedJobQueue::Wake() {
  {
    std::lock_guard lock(wake_mu_);
    ++wakeups_;
  }
  wake_cv_.notify_all();
}

Result<int64_t> EmbeddedJobQueue::Depth() {
  int64_t depth = 0;
  IMGPIPE_TRY(db_.Read([&](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto stmt, conn.Prepare("SELECT count(*) FROM jobs"));
    IMGPIPE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (row) depth = stmt.Int(0);
    return Ok();
  }));
  return depth;
}

Status EmbeddedJobQueue::Ping() {
  return db_.Read([](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto stmt, conn.Prepare("SELECT 1 FROM jobs LIMIT 1"));
    return stmt.Run();
  });
}

}  // namespace imgpipe
