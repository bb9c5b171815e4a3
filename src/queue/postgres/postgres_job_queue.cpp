#include "queue/postgres/postgres_job_queue.hpp"

#include <algorithm>
#include <charconv>

namespace imgpipe {

namespace {

// A job is ready when it may run (not_before) and nobody holds a live lease on it.
constexpr std::string_view kReadyCondition = "not_before <= $1 AND (lease_until IS NULL OR lease_until <= $1)";

Status ParseInt(std::string_view text, int64_t* out, std::string_view what) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  if (ec != std::errc() || end != text.data() + text.size()) {
    return MakeError(ErrorKind::kInternal, "a job has a malformed " + std::string(what) + " '" + std::string(text) +
                                               "'; the database was modified outside imgpipe");
  }
  return Ok();
}

}  // namespace

PostgresJobQueue::PostgresJobQueue(PostgresDatabase& db, const Clock& clock, Options options)
    : db_(db), clock_(clock), options_(options) {}

Result<std::vector<Job>> PostgresJobQueue::TryLease(const std::string& owner, size_t max,
                                                    std::chrono::milliseconds lease) {
  const TimePoint now = clock_.Now();
  std::vector<Job> jobs;
  // One statement, so it commits on its own. SKIP LOCKED: rows another leaser is taking right now are passed over,
  // not waited for; MATERIALIZED makes the locked set the one the UPDATE changes.
  IMGPIPE_TRY(db_.Run([&](PgConnection& conn) -> Status {
    jobs.clear();
    IMGPIPE_ASSIGN_OR_RETURN(
        auto result,
        conn.Exec("WITH ready AS MATERIALIZED (SELECT id FROM jobs WHERE " + std::string(kReadyCondition) +
                      " ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED) "
                      "UPDATE jobs SET lease_owner = $2, lease_until = $3, attempts = attempts + 1 "
                      "FROM ready WHERE jobs.id = ready.id "
                      "RETURNING jobs.id, jobs.image_id, jobs.pipeline, jobs.attempts - 1, jobs.enqueued_at",
                  PgParams()
                      .Time(now)
                      .Text(owner)
                      .Time(now + lease)
                      .Int(static_cast<int64_t>(std::min<size_t>(max, INT64_MAX)))));
    for (int row = 0; row < result.Rows(); ++row) {
      Job job;
      IMGPIPE_TRY(ParseInt(result.Text(row, 0), &job.id, "id"));
      job.image_id = ImageId(std::string(result.Text(row, 1)));
      job.pipeline = std::string(result.Text(row, 2));
      int64_t attempts = 0;
      IMGPIPE_TRY(ParseInt(result.Text(row, 3), &attempts, "attempt count"));
      job.attempts = static_cast<int>(attempts);
      if (!ParsePgTime(result.Text(row, 4), &job.enqueued_at)) {
        return MakeError(ErrorKind::kInternal, "job " + std::to_string(job.id) + " has a malformed enqueued_at '" +
                                                   std::string(result.Text(row, 4)) + "'");
      }
      jobs.push_back(std::move(job));
    }
    return Ok();
  }));
  // RETURNING gives rows in no promised order.
  std::sort(jobs.begin(), jobs.end(), [](const Job& a, const Job& b) { return a.id < b.id; });
  return jobs;
}

Result<std::vector<Job>> PostgresJobQueue::Lease(const std::string& owner, size_t max,
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

Status PostgresJobQueue::Ack(const Job& job) {
  return db_.Run([&](PgConnection& conn) -> Status {
    IMGPIPE_TRY(conn.Exec("DELETE FROM jobs WHERE id = $1", PgParams().Int(job.id)));
    return Ok();
  });
}

Status PostgresJobQueue::Retry(const Job& job, TimePoint retry_at, const std::string& error) {
  IMGPIPE_TRY(db_.Run([&](PgConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto result, conn.Exec("UPDATE jobs SET not_before = $2, lease_owner = NULL, "
                                                    "lease_until = NULL, last_error = $3 WHERE id = $1",
                                                    PgParams().Int(job.id).Time(retry_at).Text(error)));
    if (result.AffectedRows() == 0) {
      return MakeError(ErrorKind::kNotFound, "job " + std::to_string(job.id) + " for image " +
                                                 job.image_id.value() + " is no longer queued");
    }
    return Ok();
  }));
  Wake();
  return Ok();
}

Status PostgresJobQueue::ReleaseLeases(const std::string& owner) {
  IMGPIPE_TRY(db_.Run([&](PgConnection& conn) -> Status {
    if (owner.empty()) {
      IMGPIPE_TRY(conn.Exec("UPDATE jobs SET lease_owner = NULL, lease_until = NULL "
                            "WHERE lease_owner IS NOT NULL OR lease_until IS NOT NULL"));
      return Ok();
    }
    IMGPIPE_TRY(conn.Exec("UPDATE jobs SET lease_owner = NULL, lease_until = NULL, "
                          "attempts = greatest(attempts - 1, 0) WHERE lease_owner = $1",
                          PgParams().Text(owner)));
    return Ok();
  }));
  Wake();
  return Ok();
}

void PostgresJobQueue::Wake() {
  {
    std::lock_guard lock(wake_mu_);
    ++wakeups_;
  }
  wake_cv_.notify_all();
}

Result<int64_t> PostgresJobQueue::Depth() {
  int64_t depth = 0;
  IMGPIPE_TRY(db_.Run([&](PgConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto result, conn.Exec("SELECT count(*) FROM jobs"));
    return ParseInt(result.Text(0, 0), &depth, "count");
  }));
  return depth;
}

Status PostgresJobQueue::Ping() {
  return db_.Run([](PgConnection& conn) -> Status {
    IMGPIPE_TRY(conn.Exec("SELECT 1 FROM jobs LIMIT 1"));
    return Ok();
  });
}

}  // namespace imgpipe
