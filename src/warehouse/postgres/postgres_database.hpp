#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.hpp"
#include "core/result.hpp"

struct pg_conn;
struct pg_result;

namespace imgpipe {

//! OIDs of the built-in types imgpipe binds and reads (they are fixed in every PostgreSQL release; pg_type.h is a
//! server header we do not depend on).
namespace pg_oid {
inline constexpr uint32_t kUnknownInfer = 0;  //!< no type: the server infers it from the context, as for a literal
inline constexpr uint32_t kBool = 16;
inline constexpr uint32_t kBytea = 17;
inline constexpr uint32_t kInt8 = 20;
inline constexpr uint32_t kInt2 = 21;
inline constexpr uint32_t kInt4 = 23;
inline constexpr uint32_t kText = 25;
inline constexpr uint32_t kOid = 26;
inline constexpr uint32_t kJson = 114;
inline constexpr uint32_t kFloat4 = 700;
inline constexpr uint32_t kFloat8 = 701;
inline constexpr uint32_t kTimestamp = 1114;
inline constexpr uint32_t kTimestampTz = 1184;
inline constexpr uint32_t kNumeric = 1700;
inline constexpr uint32_t kJsonb = 3802;
}  // namespace pg_oid

//! A time as a timestamptz parameter: RFC 3339 in UTC with microseconds, "2026-01-10T12:00:00.123456Z". Exact:
//! timestamptz keeps microseconds, like TimePoint values made by the clocks.
std::string FormatPgTime(TimePoint t);
//! Parses timestamptz text as a session with TimeZone=UTC and DateStyle=ISO prints it ("2026-01-10 12:00:00+00",
//! "2026-01-10 12:00:00.5+00"), or RFC 3339 with 'T' and 'Z'/offset. False if the text has neither shape.
bool ParsePgTime(std::string_view text, TimePoint* out);
//! timestamptz text of a UTC session rewritten as RFC 3339 with at least milliseconds ("2026-01-10 12:00:00.5+00" ->
//! "2026-01-10T12:00:00.500Z"), the time format analysts get from imgpipe on every backend; nullopt if `text` is not
//! in that form (e.g. "infinity").
std::optional<std::string> PgTimeToRfc3339(std::string_view text);

//! The ErrorKind of a SQLSTATE, as every PostgreSQL backend method reports it: unique_violation (23505) is
//! kConflict; other integrity and data errors (class 22, 23) kInvalidArgument; serialization failure and deadlock
//! (40001, 40P01) kRetry; connection errors (class 08), shutdown (57P01-57P03), a cancelled statement (57014), lock
//! timeouts (55P03) and exhausted resources (class 53) kUnavailable; the rest kInternal.
ErrorKind PgErrorKind(std::string_view sqlstate);
//! True for SQLSTATEs that mean the connection is gone (class 08, 57P01-57P03): the pool drops it.
bool PgConnectionLost(std::string_view sqlstate);

//! A connection string (URI or key=value) as it may appear in messages and logs: "postgresql://user@host:port/db",
//! never the password or other parameters. `url` itself if libpq cannot parse it (it then holds no secret we know of,
//! but is cut to 80 characters).
std::string DescribePgUrl(const std::string& url);
//! `url` (URI or key=value) pointing at database `dbname` instead, as a key=value connection string; nullopt if
//! libpq cannot parse `url`. For tools and tests that create databases beside the configured one.
std::optional<std::string> PgUrlWithDatabase(const std::string& url, const std::string& dbname);

//! Positional parameters $1, $2... sent in text format, each with a type OID (kUnknownInfer: the server infers the
//! type from where the parameter is used, as it would for a quoted literal).
class PgParams {
 public:
  PgParams& Add(std::optional<std::string> value, uint32_t type = pg_oid::kUnknownInfer);
  PgParams& Text(std::string_view value) { return Add(std::string(value)); }
  PgParams& Int(int64_t value);
  PgParams& Double(double value);
  PgParams& Bool(bool value);
  PgParams& Time(TimePoint value);
  PgParams& Null(uint32_t type = pg_oid::kUnknownInfer) { return Add(std::nullopt, type); }
  PgParams& OptionalText(const std::optional<std::string>& value) { return Add(value); }
  PgParams& OptionalInt(const std::optional<int64_t>& value);
  PgParams& OptionalDouble(const std::optional<double>& value);
  PgParams& OptionalTime(const std::optional<TimePoint>& value);

  size_t size() const { return values_.size(); }
  const std::vector<std::optional<std::string>>& values() const { return values_; }
  const std::vector<uint32_t>& types() const { return types_; }

 private:
  std::vector<std::optional<std::string>> values_;
  std::vector<uint32_t> types_;
};

//! The rows of a finished statement, in text format. Move-only.
class PgResult {
 public:
  explicit PgResult(pg_result* result) : result_(result) {}
  PgResult(PgResult&& other) noexcept : result_(other.result_) { other.result_ = nullptr; }
  PgResult& operator=(PgResult&& other) noexcept;
  PgResult(const PgResult&) = delete;
  ~PgResult();

  int Rows() const;
  int Columns() const;
  bool IsNull(int row, int column) const;
  //! The cell's text; valid while this result lives. Empty for NULL.
  std::string_view Text(int row, int column) const;
  std::string ColumnName(int column) const;
  uint32_t ColumnType(int column) const;
  //! Rows inserted, updated or deleted by the statement (0 for other statements).
  int64_t AffectedRows() const;

 private:
  pg_result* result_;
};

//! One libpq connection, used by one thread at a time (the pool hands it out). Sessions run with TimeZone=UTC,
//! DateStyle=ISO, extra_float_digits=1 (floats print exactly), client_encoding=UTF8 and synchronous_commit=on (a
//! COMMIT that returned is on disk, whatever the server's default).
class PgConnection {
 public:
  //! Connects; kUnavailable naming the server (never the password) if it cannot.
  static Result<std::unique_ptr<PgConnection>> Connect(const std::string& url);
  ~PgConnection();
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  //! Runs one statement (extended protocol: a second statement in `sql` is an error) and returns its rows. Errors are
  //! "<what the statement does>: <PostgreSQL's message>" with PgErrorKind's kind; a lost connection marks this
  //! connection broken and is kUnavailable.
  Result<PgResult> Exec(std::string_view sql, const PgParams& params = {});
  //! Runs a script of statements without parameters (simple protocol), e.g. a migration; rows are discarded.
  Status ExecScript(std::string_view sql);

  //! True once the connection failed in a way that leaves it unusable (lost, or stopped mid-protocol); the pool then
  //! closes it instead of reusing it.
  bool broken() const { return broken_; }
  void MarkBroken() { broken_ = true; }
  //! The SQLSTATE of the last failed Exec/ExecScript/ErrorOf ("23505"...), empty if it had none or succeeded.
  const std::string& last_sqlstate() const { return last_sqlstate_; }
  pg_conn* handle() const { return conn_; }

  //! The Error for a failed `result` (which may be null: libpq could not even send), with `context` in front.
  //! Marks the connection broken when it was lost.
  Error ErrorOf(pg_result* result, std::string_view context);

 private:
  explicit PgConnection(pg_conn* conn) : conn_(conn) {}
  pg_conn* conn_;
  bool broken_ = false;
  std::string last_sqlstate_;
};

class PgPool;

//! The connections to one PostgreSQL database: a pool for imgpipe's own statements and a separate, smaller one for
//! untrusted (analyst) SQL, so analysts can never take the connections uploads need. Connections open lazily and are
//! reopened after a loss. Thread-safe.
//! Lifetimes: every Transaction/Run/RunUntrusted call must have returned before the database is destroyed.
class PostgresDatabase {
 public:
  struct Options {
    std::string url;              //!< libpq connection string or URI (database.url)
    size_t pool_size = 8;         //!< connections for imgpipe's own statements (database.pool_size)
    size_t untrusted_connections = 2;
    //! How long a caller waits for a free connection before kUnavailable.
    std::chrono::milliseconds acquire_timeout{30000};
  };

  //! Checks the server answers (one connection is opened and kept). kUnavailable naming the server if not.
  static Result<std::unique_ptr<PostgresDatabase>> Open(Options options);
  ~PostgresDatabase();

  //! Runs `fn` in a READ COMMITTED transaction and commits; ok means committed and durable. If `fn` fails, its
  //! changes are rolled back and its error returned. Retried once, on a fresh connection, when the connection was
  //! lost before COMMIT was sent or the transaction hit a serialization failure or deadlock (kRetry): `fn` must then
  //! start over cleanly (reset what it collects). If the connection is lost during COMMIT the outcome is unknown:
  //! kUnavailable saying so, no retry.
  Status Transaction(const std::function<Status(PgConnection&)>& fn);
  //! Runs `fn` on a pooled connection outside a transaction block (each statement commits on its own); retried once
  //! on a fresh connection when the connection was lost. For reads and single-statement writes.
  Status Run(const std::function<Status(PgConnection&)>& fn);
  //! Runs `fn` on a connection kept for untrusted SQL. Afterwards the connection is rolled back and reset with
  //! DISCARD ALL (closed if that fails), so nothing the SQL did to the session (settings, roles, advisory locks,
  //! cursors, prepared statements, LISTEN) outlives the call. Not retried.
  Status RunUntrusted(const std::function<Status(PgConnection&)>& fn);

  //! The server and database, for messages: DescribePgUrl(url).
  const std::string& description() const { return description_; }

 private:
  explicit PostgresDatabase(Options options);
  Status RunWithRetry(const std::function<Status(PgConnection&)>& fn, bool transaction);

  Options options_;
  std::string description_;
  std::unique_ptr<PgPool> pool_;
  std::unique_ptr<PgPool> untrusted_;
};

}  // namespace imgpipe
