#include "warehouse/postgres/postgres_database.hpp"

#include <libpq-fe.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <exception>

#include "core/log.hpp"

namespace imgpipe {

namespace {

// Settings every session gets, after the user's own `options` so these win: times are parsed and printed in UTC,
// floats print exactly (the shortest text that reads back to the same double), and a COMMIT that returned is
// durable even if the server's default says otherwise.
constexpr std::string_view kSessionOptions =
    "-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=postgres -c extra_float_digits=1 "
    "-c synchronous_commit=on";

constexpr int64_t kMicrosPerDay = 86'400'000'000;

std::string Trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ' || text.back() == '\r')) text.pop_back();
  return text;
}

std::string Snippet(std::string_view sql) {
  std::string s(sql.substr(0, 60));
  for (char& c : s) {
    if (c == '\n' || c == '\t') c = ' ';
  }
  if (sql.size() > 60) s += "...";
  return "running '" + s + "'";
}

bool Digits(std::string_view text, size_t pos, size_t count, int* out) {
  if (pos + count > text.size()) return false;
  int value = 0;
  for (size_t i = pos; i < pos + count; ++i) {
    if (text[i] < '0' || text[i] > '9') return false;
    value = value * 10 + (text[i] - '0');
  }
  *out = value;
  return true;
}

//! The parts of "YYYY-MM-DD?HH:MM:SS[.f...]<zone>" (? = ' ' or 'T'); zone offset in seconds east of UTC.
struct TimeParts {
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  int64_t micros = 0;
  std::string_view fraction;  //!< the digits after '.', as written
  int offset_seconds = 0;
  bool utc_short = false;     //!< the zone was written "+00" (PostgreSQL's UTC output)
};

bool SplitTime(std::string_view text, TimeParts* p) {
  if (text.size() < 19 || text[4] != '-' || text[7] != '-' || (text[10] != ' ' && text[10] != 'T') ||
      text[13] != ':' || text[16] != ':') {
    return false;
  }
  if (!Digits(text, 0, 4, &p->year) || !Digits(text, 5, 2, &p->month) || !Digits(text, 8, 2, &p->day) ||
      !Digits(text, 11, 2, &p->hour) || !Digits(text, 14, 2, &p->minute) || !Digits(text, 17, 2, &p->second)) {
    return false;
  }
  size_t i = 19;
  if (i < text.size() && text[i] == '.') {
    size_t start = ++i;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') ++i;
    p->fraction = text.substr(start, i - start);
    if (p->fraction.empty()) return false;
    int64_t scale = 100000;
    for (size_t k = 0; k < p->fraction.size() && k < 6; ++k, scale /= 10) p->micros += (p->fraction[k] - '0') * scale;
  }
  std::string_view zone = text.substr(i);
  if (zone == "Z" || zone == "z") return true;
  if (zone.empty() || (zone[0] != '+' && zone[0] != '-')) return false;
  int hours = 0, minutes = 0, seconds = 0;
  if (!Digits(zone, 1, 2, &hours)) return false;
  size_t j = 3;
  if (j < zone.size() && zone[j] == ':') ++j;
  if (j < zone.size()) {
    if (!Digits(zone, j, 2, &minutes)) return false;
    j += 2;
    if (j < zone.size() && zone[j] == ':') ++j;
    if (j < zone.size()) {
      if (!Digits(zone, j, 2, &seconds)) return false;
      j += 2;
    }
  }
  if (j != zone.size()) return false;
  p->offset_seconds = (zone[0] == '-' ? -1 : 1) * (hours * 3600 + minutes * 60 + seconds);
  p->utc_short = zone == "+00";
  return true;
}

//! Server notices go to the log instead of libpq's default, stderr: warnings as warnings (e.g. a migration run by a
//! user that cannot revoke a privilege), the rest (NOTICE: "relation already exists, skipping"...) as debug.
void OnNotice(void* /*arg*/, const PGresult* result) {
  const char* severity = PQresultErrorField(result, PG_DIAG_SEVERITY_NONLOCALIZED);
  const char* message = PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY);
  boost::json::object fields{{"message", message != nullptr ? message : ""}};
  if (severity != nullptr && std::string_view(severity) == "WARNING") {
    LogWarn("PostgreSQL warning", std::move(fields));
  } else {
    LogDebug("PostgreSQL notice", std::move(fields));
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Times, errors, URLs

std::string FormatPgTime(TimePoint t) {
  using namespace std::chrono;
  const int64_t us = ToUnixMicros(t);
  int64_t days = us / kMicrosPerDay;
  int64_t rest = us % kMicrosPerDay;
  if (rest < 0) {
    rest += kMicrosPerDay;
    --days;
  }
  const year_month_day ymd{sys_days{std::chrono::days{days}}};
  const int64_t seconds = rest / 1'000'000;
  char buf[48];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02d.%06dZ", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                static_cast<int>(seconds / 3600), static_cast<int>(seconds / 60 % 60), static_cast<int>(seconds % 60),
                static_cast<int>(rest % 1'000'000));
  return buf;
}

bool ParsePgTime(std::string_view text, TimePoint* out) {
  using namespace std::chrono;
  TimeParts p;
  if (!SplitTime(text, &p)) return false;
  const year_month_day ymd{year{p.year}, month{static_cast<unsigned>(p.month)}, day{static_cast<unsigned>(p.day)}};
  if (!ymd.ok() || p.hour > 23 || p.minute > 59 || p.second > 60) return false;
  const int64_t days = sys_days{ymd}.time_since_epoch().count();
  const int64_t seconds = days * 86400 + p.hour * 3600 + p.minute * 60 + p.second - p.offset_seconds;
  *out = FromUnixMicros(seconds * 1'000'000 + p.micros);
  return true;
}

std::optional<std::string> PgTimeToRfc3339(std::string_view text) {
  TimeParts p;
  if (text.size() < 19 || text[10] != ' ' || !SplitTime(text, &p) || !p.utc_short) return std::nullopt;
  std::string out(text.substr(0, 19));
  out[10] = 'T';
  // At least milliseconds, so times print as SQLite stores them ("...12:00:00.000Z"); microseconds when present.
  out += '.';
  out += p.fraction;
  if (p.fraction.size() < 3) out.append(3 - p.fraction.size(), '0');
  out += 'Z';
  return out;
}

ErrorKind PgErrorKind(std::string_view sqlstate) {
  if (sqlstate.size() != 5) return ErrorKind::kInternal;
  if (sqlstate == "23505") return ErrorKind::kConflict;
  if (sqlstate == "40001" || sqlstate == "40P01") return ErrorKind::kRetry;
  if (sqlstate == "57014" || sqlstate == "55P03") return ErrorKind::kUnavailable;
  if (PgConnectionLost(sqlstate)) return ErrorKind::kUnavailable;
  const std::string_view cls = sqlstate.substr(0, 2);
  if (cls == "22" || cls == "23") return ErrorKind::kInvalidArgument;
  if (cls == "53" || cls == "58") return ErrorKind::kUnavailable;  // out of disk/memory/connections; I/O errors
  return ErrorKind::kInternal;
}

bool PgConnectionLost(std::string_view sqlstate) {
  return sqlstate.starts_with("08") || sqlstate == "57P01" || sqlstate == "57P02" || sqlstate == "57P03";
}

std::string DescribePgUrl(const std::string& url) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(url.c_str(), &error);
  if (options == nullptr) {
    PQfreemem(error);
    return url.size() > 80 ? url.substr(0, 77) + "..." : url;
  }
  std::string user, host, hostaddr, port, dbname;
  for (PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    if (o->val == nullptr) continue;
    std::string_view key = o->keyword;
    if (key == "user") user = o->val;
    if (key == "host") host = o->val;
    if (key == "hostaddr") hostaddr = o->val;
    if (key == "port") port = o->val;
    if (key == "dbname") dbname = o->val;
  }
  PQconninfoFree(options);
  if (host.empty()) host = hostaddr.empty() ? "localhost" : hostaddr;
  return "postgresql://" + (user.empty() ? "" : user + "@") + host + (port.empty() ? "" : ":" + port) + "/" + dbname;
}

std::optional<std::string> PgUrlWithDatabase(const std::string& url, const std::string& dbname) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(url.c_str(), &error);
  if (options == nullptr) {
    PQfreemem(error);
    return std::nullopt;
  }
  // key='value' with \ and ' escaped, as libpq reads it.
  auto quoted = [](std::string_view value) {
    std::string out = "'";
    for (char c : value) {
      if (c == '\\' || c == '\'') out += '\\';
      out += c;
    }
    return out + "'";
  };
  std::string conninfo;
  for (PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    std::string_view key = o->keyword;
    if (key == "dbname" || o->val == nullptr) continue;
    conninfo += std::string(key) + "=" + quoted(o->val) + " ";
  }
  PQconninfoFree(options);
  return conninfo + "dbname=" + quoted(dbname);
}

// ---------------------------------------------------------------------------------------------------------------
// PgParams, PgResult

PgParams& PgParams::Add(std::optional<std::string> value, uint32_t type) {
  values_.push_back(std::move(value));
  types_.push_back(type);
  return *this;
}

PgParams& PgParams::Int(int64_t value) { return Add(std::to_string(value), pg_oid::kInt8); }

PgParams& PgParams::Double(double value) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);  // shortest text that reads back exactly
  return Add(std::string(buf, end), pg_oid::kFloat8);
}

PgParams& PgParams::Bool(bool value) { return Add(value ? "true" : "false", pg_oid::kBool); }

PgParams& PgParams::Time(TimePoint value) { return Add(FormatPgTime(value), pg_oid::kTimestampTz); }

PgParams& PgParams::OptionalInt(const std::optional<int64_t>& value) {
  return value ? Int(*value) : Null(pg_oid::kInt8);
}

PgParams& PgParams::OptionalDouble(const std::optional<double>& value) {
  return value ? Double(*value) : Null(pg_oid::kFloat8);
}

PgParams& PgParams::OptionalTime(const std::optional<TimePoint>& value) {
  return value ? Time(*value) : Null(pg_oid::kTimestampTz);
}

PgResult& PgResult::operator=(PgResult&& other) noexcept {
  if (this != &other) {
    PQclear(result_);
    result_ = other.result_;
    other.result_ = nullptr;
  }
  return *this;
}

PgResult::~PgResult() { PQclear(result_); }
int PgResult::Rows() const { return PQntuples(result_); }
int PgResult::Columns() const { return PQnfields(result_); }
bool PgResult::IsNull(int row, int column) const { return PQgetisnull(result_, row, column) != 0; }

std::string_view PgResult::Text(int row, int column) const {
  return std::string_view(PQgetvalue(result_, row, column), static_cast<size_t>(PQgetlength(result_, row, column)));
}

std::string PgResult::ColumnName(int column) const {
  const char* name = PQfname(result_, column);
  return name != nullptr ? name : "";
}

uint32_t PgResult::ColumnType(int column) const { return PQftype(result_, column); }

int64_t PgResult::AffectedRows() const {
  const char* text = PQcmdTuples(result_);
  int64_t n = 0;
  if (text != nullptr) std::from_chars(text, text + std::char_traits<char>::length(text), n);
  return n;
}

// ---------------------------------------------------------------------------------------------------------------
// PgConnection

Result<std::unique_ptr<PgConnection>> PgConnection::Connect(const std::string& url) {
  char* parse_error = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(url.c_str(), &parse_error);
  if (parsed == nullptr) {
    std::string why = parse_error != nullptr ? Trimmed(parse_error) : "out of memory";
    PQfreemem(parse_error);
    return MakeError(ErrorKind::kInvalidArgument,
                     "database.url is not a libpq connection string or URI (" + why +
                         "); use e.g. postgresql://user@host:5432/imgpipe or \"host=... dbname=...\"");
  }
  std::vector<std::string> keys, values;
  std::string options;
  bool has_timeout = false;
  for (PQconninfoOption* o = parsed; o->keyword != nullptr; ++o) {
    if (o->val == nullptr) continue;
    std::string_view key = o->keyword;
    if (key == "options") {
      options = o->val;
      continue;
    }
    if (key == "client_encoding") continue;  // always UTF8 below
    if (key == "connect_timeout") has_timeout = true;
    keys.emplace_back(key);
    values.emplace_back(o->val);
  }
  PQconninfoFree(parsed);
  keys.emplace_back("options");
  values.push_back(options.empty() ? std::string(kSessionOptions) : options + " " + std::string(kSessionOptions));
  keys.emplace_back("client_encoding");
  values.emplace_back("UTF8");
  keys.emplace_back("fallback_application_name");
  values.emplace_back("imgpipe");
  if (!has_timeout) {
    keys.emplace_back("connect_timeout");
    values.emplace_back("10");
  }
  std::vector<const char*> key_ptrs, value_ptrs;
  for (size_t i = 0; i < keys.size(); ++i) {
    key_ptrs.push_back(keys[i].c_str());
    value_ptrs.push_back(values[i].c_str());
  }
  key_ptrs.push_back(nullptr);
  value_ptrs.push_back(nullptr);

  PGconn* conn = PQconnectdbParams(key_ptrs.data(), value_ptrs.data(), /*expand_dbname=*/0);
  if (conn == nullptr || PQstatus(conn) != CONNECTION_OK) {
    std::string why = conn != nullptr ? Trimmed(PQerrorMessage(conn)) : "out of memory";
    PQfinish(conn);
    return MakeError(ErrorKind::kUnavailable, "cannot connect to PostgreSQL at " + DescribePgUrl(url) + ": " + why +
                                                  "; check database.url and that the server is running");
  }
  PQsetNoticeReceiver(conn, OnNotice, nullptr);
  return std::unique_ptr<PgConnection>(new PgConnection(conn));
}

PgConnection::~PgConnection() { PQfinish(conn_); }

Error PgConnection::ErrorOf(PGresult* result, std::string_view context) {
  std::string sqlstate;
  std::string message;
  if (result != nullptr) {
    if (const char* s = PQresultErrorField(result, PG_DIAG_SQLSTATE)) sqlstate = s;
    if (const char* m = PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY)) message = m;
    ExecStatusType status = PQresultStatus(result);
    if (status == PGRES_COPY_IN || status == PGRES_COPY_OUT || status == PGRES_COPY_BOTH) {
      broken_ = true;  // the server now expects COPY data we will not exchange
      return MakeError(ErrorKind::kInternal, std::string(context) + ": the statement started a COPY");
    }
  }
  if (message.empty()) message = Trimmed(PQerrorMessage(conn_));
  last_sqlstate_ = sqlstate;
  if (result == nullptr || PQstatus(conn_) == CONNECTION_BAD || PgConnectionLost(sqlstate)) {
    broken_ = true;
    return MakeError(ErrorKind::kUnavailable,
                     std::string(context) + ": " + message + " (the connection to PostgreSQL was lost)");
  }
  return MakeError(PgErrorKind(sqlstate), std::string(context) + ": " + message);
}

Result<PgResult> PgConnection::Exec(std::string_view sql, const PgParams& params) {
  const std::string text(sql);
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& v : params.values()) values.push_back(v ? v->c_str() : nullptr);
  last_sqlstate_.clear();
  PGresult* result = PQexecParams(conn_, text.c_str(), static_cast<int>(params.size()), params.types().data(),
                                  values.data(), nullptr, nullptr, /*resultFormat=*/0);
  const ExecStatusType status = result != nullptr ? PQresultStatus(result) : PGRES_FATAL_ERROR;
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return PgResult(result);
  Error error = ErrorOf(result, Snippet(sql));
  PQclear(result);
  return error;
}

Status PgConnection::ExecScript(std::string_view sql) {
  const std::string text(sql);
  last_sqlstate_.clear();
  // PQexec returns the last statement's result; an error stops the script there.
  PGresult* result = PQexec(conn_, text.c_str());
  const ExecStatusType status = result != nullptr ? PQresultStatus(result) : PGRES_FATAL_ERROR;
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK || status == PGRES_EMPTY_QUERY) {
    PQclear(result);
    return Ok();
  }
  Error error = ErrorOf(result, Snippet(sql));
  PQclear(result);
  return error;
}

// ---------------------------------------------------------------------------------------------------------------
// PgPool

//! Up to `max` connections to one server, opened on demand. Thread-safe.
class PgPool {
 public:
  PgPool(std::string url, std::string description, size_t max)
      : url_(std::move(url)), description_(std::move(description)), max_(std::max<size_t>(1, max)) {}

  Result<std::unique_ptr<PgConnection>> Acquire(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::unique_lock lock(mu_);
    while (true) {
      if (!cv_.wait_until(lock, deadline, [&] { return !idle_.empty() || open_ < max_; })) {
        return MakeError(ErrorKind::kUnavailable,
                         "all " + std::to_string(max_) + " connections to PostgreSQL at " + description_ +
                             " stayed busy for " + std::to_string(timeout.count()) +
                             " ms; raise database.pool_size or look for slow statements");
      }
      if (!idle_.empty()) {
        std::unique_ptr<PgConnection> conn = std::move(idle_.back());
        idle_.pop_back();
        if (PQstatus(conn->handle()) == CONNECTION_OK) return conn;
        --open_;  // closed by the server while idle; open another
        continue;
      }
      ++open_;
      lock.unlock();
      auto conn = PgConnection::Connect(url_);
      if (!conn.ok()) {
        lock.lock();
        --open_;
        cv_.notify_one();
      }
      return conn;
    }
  }

  void Release(std::unique_ptr<PgConnection> conn) {
    const bool reusable = !conn->broken() && PQstatus(conn->handle()) == CONNECTION_OK &&
                          PQtransactionStatus(conn->handle()) == PQTRANS_IDLE;
    std::unique_ptr<PgConnection> closing;
    {
      std::lock_guard lock(mu_);
      if (reusable) {
        idle_.push_back(std::move(conn));
      } else {
        closing = std::move(conn);
        --open_;
      }
    }
    cv_.notify_one();
  }

  //! After one connection was lost the idle ones most likely were too (server restart): close them all, so a retry
  //! gets a fresh connection.
  void DropIdle() {
    std::vector<std::unique_ptr<PgConnection>> closing;
    {
      std::lock_guard lock(mu_);
      closing.swap(idle_);
      open_ -= closing.size();
    }
    cv_.notify_all();
  }

 private:
  const std::string url_;
  const std::string description_;
  const size_t max_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<PgConnection>> idle_;
  size_t open_ = 0;  //!< idle + handed out + being opened
};

// ---------------------------------------------------------------------------------------------------------------
// PostgresDatabase

namespace {

Status CallGuarded(const std::function<Status(PgConnection&)>& fn, PgConnection& conn) {
  try {
    return fn(conn);
  } catch (const std::exception& e) {
    return MakeError(ErrorKind::kInternal, std::string("unexpected exception in a database call: ") + e.what());
  }
}

}  // namespace

PostgresDatabase::PostgresDatabase(Options options)
    : options_(std::move(options)),
      description_(DescribePgUrl(options_.url)),
      pool_(std::make_unique<PgPool>(options_.url, description_, options_.pool_size)),
      untrusted_(std::make_unique<PgPool>(options_.url, description_, options_.untrusted_connections)) {}

PostgresDatabase::~PostgresDatabase() = default;

Result<std::unique_ptr<PostgresDatabase>> PostgresDatabase::Open(Options options) {
  if (options.url.empty()) {
    return MakeError(ErrorKind::kInvalidArgument,
                     "database.url is empty; set it to the PostgreSQL connection string, e.g. "
                     "postgresql://imgpipe@db.internal:5432/imgpipe");
  }
  std::unique_ptr<PostgresDatabase> db(new PostgresDatabase(std::move(options)));
  IMGPIPE_ASSIGN_OR_RETURN(auto conn, db->pool_->Acquire(db->options_.acquire_timeout));
  db->pool_->Release(std::move(conn));
  return db;
}

Status PostgresDatabase::RunWithRetry(const std::function<Status(PgConnection&)>& fn, bool transaction) {
  for (int attempt = 0;; ++attempt) {
    IMGPIPE_ASSIGN_OR_RETURN(auto conn, pool_->Acquire(options_.acquire_timeout));
    bool commit_sent = false;
    Status status;
    if (transaction) {
      auto begin = conn->Exec("BEGIN");
      status = begin.ok() ? CallGuarded(fn, *conn) : Status(begin.error());
      if (status.ok()) {
        commit_sent = true;
        auto commit = conn->Exec("COMMIT");
        if (!commit.ok()) status = commit.error();
      } else if (!conn->broken() && PQtransactionStatus(conn->handle()) != PQTRANS_IDLE) {
        if (!conn->Exec("ROLLBACK").ok()) conn->MarkBroken();
      }
    } else {
      status = CallGuarded(fn, *conn);
    }
    const bool lost = conn->broken();
    pool_->Release(std::move(conn));
    if (status.ok()) return status;
    if (lost) pool_->DropIdle();
    if (lost && commit_sent) {
      return MakeError(ErrorKind::kUnavailable,
                       "the connection to PostgreSQL at " + description_ +
                           " was lost while committing, so the change may or may not have been applied (" +
                           status.error().message + "); retry the request");
    }
    const bool retry = attempt == 0 && (lost || status.error().kind == ErrorKind::kRetry);
    if (!retry) return status;
  }
}

Status PostgresDatabase::Transaction(const std::function<Status(PgConnection&)>& fn) {
  return RunWithRetry(fn, /*transaction=*/true);
}

Status PostgresDatabase::Run(const std::function<Status(PgConnection&)>& fn) {
  return RunWithRetry(fn, /*transaction=*/false);
}

Status PostgresDatabase::RunUntrusted(const std::function<Status(PgConnection&)>& fn) {
  IMGPIPE_ASSIGN_OR_RETURN(auto conn, untrusted_->Acquire(options_.acquire_timeout));
  Status status = CallGuarded(fn, *conn);
  if (!conn->broken()) {
    const PGTransactionStatusType tx = PQtransactionStatus(conn->handle());
    if (tx == PQTRANS_ACTIVE || tx == PQTRANS_UNKNOWN) {
      conn->MarkBroken();  // a statement is still running: this connection cannot be reused
    } else if (tx != PQTRANS_IDLE && !conn->Exec("ROLLBACK").ok()) {
      conn->MarkBroken();
    }
  }
  if (!conn->broken() && !conn->Exec("DISCARD ALL").ok()) conn->MarkBroken();
  if (PQstatus(conn->handle()) == CONNECTION_BAD) untrusted_->DropIdle();
  untrusted_->Release(std::move(conn));
  return status;
}

}  // namespace imgpipe
