#include "audit/audit_log.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <set>

#include "core/blob_keys.hpp"
#include "core/ids.hpp"

namespace imgpipe {

namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

const std::string kZeroHash(64, '0');
constexpr std::string_view kHashMember = ",\"hash\":\"";

//! "2026-01-10.jsonl" for the UTC day of `t`.
std::string DayFile(TimePoint t) {
  std::string day = DayPrefix(t);  // "2026/01/10/"
  return day.substr(0, 4) + "-" + day.substr(5, 2) + "-" + day.substr(8, 2) + ".jsonl";
}

bool IsDayFile(const std::string& name) {
  return name.size() == 16 && name.ends_with(".jsonl") && name[4] == '-' && name[7] == '-';
}

//! The day files of `dir`, oldest first.
Result<std::vector<fs::path>> DayFiles(const fs::path& dir) {
  std::vector<fs::path> files;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_regular_file() && IsDayFile(it->path().filename().string())) files.push_back(it->path());
  }
  if (ec) {
    return MakeError(ErrorKind::kUnavailable, "cannot list the audit folder " + dir.string() + ": " + ec.message());
  }
  std::sort(files.begin(), files.end());
  return files;
}

Error Errno(const std::string& what) {
  return MakeError(ErrorKind::kUnavailable, what + ": " + std::strerror(errno));
}

//! A line split into the part the hash covers (the JSON without "hash", closed) and the hash written.
struct SplitLine {
  std::string covered;
  std::string hash;
};
std::optional<SplitLine> Split(std::string_view line) {
  const size_t at = line.rfind(kHashMember);
  if (at == std::string_view::npos || line.size() != at + kHashMember.size() + 64 + 2 || !line.ends_with("\"}")) {
    return std::nullopt;
  }
  return SplitLine{std::string(line.substr(0, at)) + "}", std::string(line.substr(at + kHashMember.size(), 64))};
}

}  // namespace

Result<AuditRecord> ParseAuditLine(std::string_view line) {
  auto split = Split(line);
  if (!split) return MakeError(ErrorKind::kInvalidArgument, "not an audit record (no trailing \"hash\")");
  json::error_code ec;
  json::value v = json::parse(split->covered, ec);
  if (ec || !v.is_object()) return MakeError(ErrorKind::kInvalidArgument, "not a JSON object");
  const json::object& o = v.as_object();
  auto text = [&](const char* key) -> std::string {
    const json::value* m = o.if_contains(key);
    return m && m->is_string() ? std::string(m->as_string()) : std::string();
  };
  AuditRecord r;
  const json::value* seq = o.if_contains("seq");
  if (!seq || !seq->is_int64()) return MakeError(ErrorKind::kInvalidArgument, "no integer \"seq\"");
  r.seq = seq->as_int64();
  if (!ParseRfc3339(text("at"), &r.event.at)) return MakeError(ErrorKind::kInvalidArgument, "no RFC 3339 \"at\"");
  r.event.actor = text("actor");
  r.event.action = text("action");
  r.event.target = text("target");
  r.event.remote = text("remote");
  r.event.outcome = text("outcome");
  if (const json::value* d = o.if_contains("details"); d && d->is_object()) r.event.details = d->as_object();
  r.prev = text("prev");
  r.hash = split->hash;
  return r;
}

namespace {

//! The last complete line of `path` ("" if none). Reads backwards from the end in growing chunks: the tail of a
//! day file is read on every append, and records are short.
Result<std::string> LastLine(const fs::path& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return MakeError(ErrorKind::kUnavailable, "cannot read " + path.string());
  const std::streamoff size = in.tellg();
  for (std::streamoff chunk = 4096;; chunk *= 4) {
    const std::streamoff from = std::max<std::streamoff>(0, size - chunk);
    std::string tail(static_cast<size_t>(size - from), '\0');
    in.seekg(from);
    in.read(tail.data(), static_cast<std::streamsize>(tail.size()));
    if (!in) return MakeError(ErrorKind::kUnavailable, "cannot read " + path.string());
    while (!tail.empty() && tail.back() == '\n') tail.pop_back();
    const size_t nl = tail.rfind('\n');
    if (nl != std::string::npos) return tail.substr(nl + 1);
    if (from == 0) return tail;
  }
}

}  // namespace

std::string AuditHash(const std::string& prev, const json::object& record_without_hash) {
  return Sha256Hex(prev + "\n" + json::serialize(record_without_hash));
}

Result<std::unique_ptr<AuditLog>> AuditLog::Open(fs::path dir, const Clock& clock) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return MakeError(ErrorKind::kUnavailable,
                     "cannot create the audit folder " + dir.string() + ": " + ec.message());
  }
  int fd = ::open((dir / ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return Errno("cannot open " + (dir / ".lock").string());
  return std::unique_ptr<AuditLog>(new AuditLog(std::move(dir), clock, fd));
}

AuditLog::~AuditLog() { ::close(lock_fd_); }

// Group commit: the first caller to find no writer at work becomes the leader, takes every event queued so far and
// writes them with one write and one fdatasync; the others wait for their batch's outcome. Under load many requests
// share one sync instead of queueing for one each, and every caller still returns only after its record is durable.
Status AuditLog::Append(const AuditEvent& event) {
  Pending me{&event};
  std::unique_lock lock(queue_mu_);
  queue_.push_back(&me);
  queue_cv_.wait(lock, [&] { return me.done || !writing_; });
  if (me.done) return me.result;
  writing_ = true;
  std::vector<Pending*> batch(queue_.begin(), queue_.end());
  queue_.clear();
  lock.unlock();
  std::vector<const AuditEvent*> events;
  events.reserve(batch.size());
  for (const Pending* p : batch) events.push_back(p->event);
  Status s = [&]() -> Status {
    std::lock_guard file_lock(mu_);
    if (::flock(lock_fd_, LOCK_EX) != 0) return Errno("cannot lock the audit log");
    Status written = AppendLocked(events);
    ::flock(lock_fd_, LOCK_UN);
    return written;
  }();
  lock.lock();
  for (Pending* p : batch) {
    p->result = s;
    p->done = true;
  }
  writing_ = false;  // a waiter that is not done yet leads the next batch
  queue_cv_.notify_all();
  return me.result;
}

Status AuditLog::AppendLocked(const std::vector<const AuditEvent*>& events) {
  // The chain continues from the newest record of any process.
  int64_t seq = 0;
  std::string prev = kZeroHash;
  std::string last_file;
  IMGPIPE_ASSIGN_OR_RETURN(auto files, DayFiles(dir_));
  for (auto it = files.rbegin(); it != files.rend(); ++it) {
    IMGPIPE_ASSIGN_OR_RETURN(std::string last, LastLine(*it));
    if (last.empty()) continue;
    auto record = ParseAuditLine(last);
    if (!record.ok()) {
      return MakeError(ErrorKind::kInternal, "the audit log's last record in " + it->string() +
                                                 " is damaged (" + record.error().message +
                                                 "); run `imgpipe audit verify` and repair it before appending");
    }
    seq = record->seq;
    prev = record->hash;
    last_file = it->filename().string();
    break;
  }
  std::string lines;
  for (const AuditEvent* e : events) {
    const AuditEvent& event = *e;
    json::object o;
    o["seq"] = seq + 1;
    o["at"] = FormatRfc3339(event.at);
    o["actor"] = event.actor;
    o["action"] = event.action;
    o["target"] = event.target;
    o["remote"] = event.remote;
    o["outcome"] = event.outcome;
    o["details"] = event.details;
    o["prev"] = prev;
    std::string covered = json::serialize(o);
    const std::string hash = Sha256Hex(prev + "\n" + covered);
    covered.pop_back();  // the closing brace: the hash member goes last
    lines += covered + std::string(kHashMember) + hash + "\"}\n";
    ++seq;
    prev = hash;
  }

  // Never into a file older than the last record's, so file order stays chain order even if another process's clock
  // runs ahead of ours.
  const fs::path path = dir_ / std::max(DayFile(clock_.Now()), last_file);
  const bool created = !fs::exists(path);
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return Errno("cannot open " + path.string());
  size_t done = 0;
  while (done < lines.size()) {
    ssize_t n = ::write(fd, lines.data() + done, lines.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      Status s = Errno("cannot write " + path.string());
      ::close(fd);
      return s;
    }
    done += static_cast<size_t>(n);
  }
  if (::fdatasync(fd) != 0) {
    Status s = Errno("cannot sync " + path.string());
    ::close(fd);
    return s;
  }
  ::close(fd);
  if (created) {
    int dfd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }
  return Ok();
}

Result<std::vector<AuditRecord>> AuditLog::Read(const AuditFilter& filter) const {
  std::vector<AuditRecord> out;
  IMGPIPE_ASSIGN_OR_RETURN(auto files, DayFiles(dir_));
  for (auto it = files.rbegin(); it != files.rend() && out.size() < filter.limit; ++it) {
    std::ifstream in(*it, std::ios::binary);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) {
      if (!line.empty()) lines.push_back(std::move(line));
    }
    for (auto l = lines.rbegin(); l != lines.rend() && out.size() < filter.limit; ++l) {
      auto record = ParseAuditLine(*l);
      if (!record.ok()) continue;  // Verify reports damage; reading shows what can be read
      if (filter.since && record->event.at < *filter.since) return out;
      if (!filter.action.empty() && record->event.action != filter.action) continue;
      if (!filter.actor.empty() && record->event.actor != filter.actor) continue;
      out.push_back(std::move(*record));
    }
  }
  return out;
}

Result<int> AuditLog::Prune(std::chrono::seconds keep) {
  if (keep.count() <= 0) return 0;
  std::lock_guard lock(mu_);
  if (::flock(lock_fd_, LOCK_EX) != 0) return Errno("cannot lock the audit log");
  auto unlock = [&] { ::flock(lock_fd_, LOCK_UN); };
  const std::string oldest_kept = DayFile(clock_.Now() - keep);
  auto files = DayFiles(dir_);
  if (!files.ok()) {
    unlock();
    return files.error();
  }
  std::vector<fs::path> old;
  for (const fs::path& f : *files) {
    if (f.filename().string() < oldest_kept) old.push_back(f);
  }
  if (old.empty() || old.size() == files->size()) {  // keep at least the newest file: the chain continues from it
    unlock();
    return 0;
  }
  auto last = LastLine(old.back());
  Result<AuditRecord> record = MakeError(ErrorKind::kInternal, "no last record");
  if (last.ok() && !last->empty()) record = ParseAuditLine(*last);
  AuditEvent e;
  e.at = clock_.Now();
  e.actor = "retention";
  e.action = "audit.retention";
  e.outcome = "ok";
  json::array removed;
  for (const fs::path& f : old) removed.push_back(json::string(f.filename().string()));
  e.details["removed"] = std::move(removed);
  if (record.ok()) {
    e.details["last_seq"] = record->seq;
    e.details["last_hash"] = record->hash;
  }
  Status s = AppendLocked({&e});
  if (!s.ok()) {
    unlock();
    return s.error();
  }
  int n = 0;
  for (const fs::path& f : old) {
    std::error_code ec;
    if (fs::remove(f, ec)) ++n;
  }
  unlock();
  return n;
}

Result<AuditVerifyReport> AuditLog::Verify(const fs::path& dir) {
  IMGPIPE_ASSIGN_OR_RETURN(auto files, DayFiles(dir));
  std::vector<AuditLine> lines;
  for (const fs::path& f : files) {
    std::ifstream in(f, std::ios::binary);
    if (!in) return MakeError(ErrorKind::kUnavailable, "cannot read " + f.string());
    int n = 0;
    for (std::string text; std::getline(in, text);) {
      ++n;
      lines.push_back({f.filename().string() + ":" + std::to_string(n), std::move(text)});
    }
  }
  return VerifyAuditLines(lines);
}

AuditVerifyReport VerifyAuditLines(const std::vector<AuditLine>& lines) {
  AuditVerifyReport report;
  // Where a retention record says the removed files ended: the oldest kept record must continue from one of them.
  std::set<std::pair<int64_t, std::string>> pruned_ends;
  std::vector<std::optional<AuditRecord>> records;
  for (const AuditLine& l : lines) {
    if (l.text.empty()) {
      report.problems.push_back(l.where + ": empty line");
      records.emplace_back();
      continue;
    }
    auto r = ParseAuditLine(l.text);
    if (!r.ok()) {
      report.problems.push_back(l.where + ": " + r.error().message);
      records.emplace_back();
      continue;
    }
    if (r->event.action == "audit.retention") {
      const json::value* seq = r->event.details.if_contains("last_seq");
      const json::value* hash = r->event.details.if_contains("last_hash");
      if (seq && seq->is_int64() && hash && hash->is_string()) {
        pruned_ends.insert({seq->as_int64(), std::string(hash->as_string())});
      }
    }
    records.push_back(std::move(*r));
  }
  std::optional<int64_t> prev_seq;
  std::string prev_hash;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (!records[i]) {
      prev_seq.reset();
      continue;
    }
    const AuditRecord& r = *records[i];
    const auto split = Split(lines[i].text);
    const std::string computed = Sha256Hex(r.prev + "\n" + split->covered);
    if (computed != r.hash) {
      report.problems.push_back(lines[i].where + ": record " + std::to_string(r.seq) +
                                " was changed (its hash does not match its content)");
    }
    if (!prev_seq) {
      if (report.records == 0) {
        report.first_seq = r.seq;
        const bool genesis = r.seq == 1 && r.prev == kZeroHash;
        if (!genesis && !pruned_ends.contains({r.seq - 1, r.prev})) {
          report.problems.push_back(lines[i].where + ": record " + std::to_string(r.seq) +
                                    " does not start the log, and no retention record explains the records before it");
        }
      }
    } else {
      if (r.seq != *prev_seq + 1) {
        report.problems.push_back(lines[i].where + ": record " + std::to_string(r.seq) + " follows record " +
                                  std::to_string(*prev_seq) + " (records removed, inserted or reordered)");
      } else if (r.prev != prev_hash) {
        report.problems.push_back(lines[i].where + ": record " + std::to_string(r.seq) +
                                  " does not chain to the record before it");
      }
    }
    prev_seq = r.seq;
    prev_hash = r.hash;
    ++report.records;
  }
  return report;
}

}  // namespace imgpipe
