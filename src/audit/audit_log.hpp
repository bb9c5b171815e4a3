#pragma once

#include <boost/json/object.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.hpp"
#include "core/result.hpp"

namespace imgpipe {

//! One authenticated action: who did what to which thing, from where, when, and how it ended.
struct AuditEvent {
  TimePoint at;
  std::string actor;     //!< API key id, "cli", "retention"
  std::string action;    //!< e.g. "image.upload", "image.delete", "query", "key.create", "hold.set", "retention.purge"
  std::string target;    //!< the image, key, script... it acted on; may be empty
  std::string remote;    //!< client address, empty for local commands
  std::string outcome;   //!< "ok", or the refusal's HTTP status and code ("409 conflict")
  boost::json::object details;  //!< action-specific: the query text, a hold's reason, the number of blobs purged
};

//! One line of the log as read back: the event plus its place in the chain.
struct AuditRecord {
  int64_t seq = 0;
  AuditEvent event;
  std::string prev;  //!< hash of the record before (64 zeros for the first record ever)
  std::string hash;  //!< hex SHA-256 over prev and this record's content
};

struct AuditVerifyReport {
  int64_t records = 0;
  int64_t first_seq = 0;   //!< > 1 when retention removed older files (their last hash is recorded and checked)
  std::vector<std::string> problems;  //!< "file:line: what is wrong"; empty when the chain is intact
};

struct AuditFilter {
  std::optional<TimePoint> since;
  std::string action;   //!< exact action, or "" for all
  std::string actor;    //!< exact actor, or "" for all
  size_t limit = 1000;  //!< newest first
};

//! The audit log: append-only JSON lines, one file per UTC day (`<dir>/YYYY-MM-DD.jsonl`), hash-chained so that
//! editing, removing, inserting or reordering a line is detected by Verify. Several processes may append to one
//! folder (serve and the CLI): an exclusive lock on `<dir>/.lock` orders them, and each append reads the last
//! record's hash under that lock. Every append is written and fdatasync'ed before Append returns; appends from
//! concurrent threads are written and synced together (group commit). Thread-safe.
//!
//! Retention: files of days older than `retention` are deleted by Prune, which first appends an
//! "audit.retention" record naming the files removed and the hash of their last record, so Verify can check that
//! the oldest remaining record continues the chain from there.
class AuditLog {
 public:
  static Result<std::unique_ptr<AuditLog>> Open(std::filesystem::path dir, const Clock& clock);

  Status Append(const AuditEvent& event);
  //! Records, newest first, that match the filter.
  Result<std::vector<AuditRecord>> Read(const AuditFilter& filter) const;
  //! Deletes whole days older than `keep` (0 = keep forever); returns the number of files deleted.
  Result<int> Prune(std::chrono::seconds keep);

  //! Checks every file of `dir` in order; ok unless a file cannot be read (problems are in the report).
  static Result<AuditVerifyReport> Verify(const std::filesystem::path& dir);

  const std::filesystem::path& dir() const { return dir_; }
  ~AuditLog();

 private:
  AuditLog(std::filesystem::path dir, const Clock& clock, int lock_fd)
      : dir_(std::move(dir)), clock_(clock), lock_fd_(lock_fd) {}
  //! Appends `events` in order, with one write and one fdatasync; the folder lock is held.
  Status AppendLocked(const std::vector<const AuditEvent*>& events);

  //! An Append waiting for the batch that carries its event.
  struct Pending {
    const AuditEvent* event;
    Status result = Ok();
    bool done = false;
  };

  std::filesystem::path dir_;
  const Clock& clock_;
  int lock_fd_;
  mutable std::mutex mu_;  //!< the files: one batch writer or Prune at a time in this process
  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::vector<Pending*> queue_;  //!< events waiting for the next batch
  bool writing_ = false;         //!< a leader is writing a batch
};

//! One line of the log and where it is ("2026-01-10.jsonl:12"), for VerifyAuditLines.
struct AuditLine {
  std::string where;
  std::string text;
};
//! Parses one line (kInvalidArgument naming what is wrong). Outside data: a file anyone with access may have edited.
Result<AuditRecord> ParseAuditLine(std::string_view line);
//! The checks of AuditLog::Verify over lines in log order: every hash, the sequence, the chain, the start.
AuditVerifyReport VerifyAuditLines(const std::vector<AuditLine>& lines);

//! The hash of a record: hex SHA-256 of `prev` + "\n" + the record's JSON without its "hash" member, serialized
//! with members in the order written. Exposed for tests.
std::string AuditHash(const std::string& prev, const boost::json::object& record_without_hash);

}  // namespace imgpipe
