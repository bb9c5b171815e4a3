#include "warehouse/sqlite/sqlite_database.hpp"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <condition_variable>
#include <system_error>
#include <vector>

namespace imgpipe {

namespace {

// Untrusted SQL may build values this large and no larger (SQLite's default is 1 GB): bounds a query's memory.
constexpr int kUntrustedMaxValueBytes = 16 * 1024 * 1024;

std::string SqlSnippet(sqlite3_stmt* stmt) {
  const char* sql = sqlite3_sql(stmt);
  std::string s = sql ? sql : "";
  for (char& c : s) {
    if (c == '\n' || c == '\t') c = ' ';
  }
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

}  // namespace

Error SqliteError(sqlite3* db, int rc, std::string_view context) {
  std::string message(context);
  message += ": ";
  message += db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  ErrorKind kind = ErrorKind::kInternal;
  switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
      kind = (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_ROWID)
                 ? ErrorKind::kConflict
                 : ErrorKind::kInvalidArgument;
      break;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      kind = ErrorKind::kUnavailable;
      message += " (another connection held the database lock longer than busy_timeout; retry later)";
      break;
    case SQLITE_INTERRUPT:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PROTOCOL:
      kind = ErrorKind::kUnavailable;
      break;
    case SQLITE_TOOBIG:
    case SQLITE_AUTH:
    case SQLITE_RANGE:
    case SQLITE_MISMATCH:
      kind = ErrorKind::kInvalidArgument;
      break;
    default:
      break;
  }
  return MakeError(kind, std::move(message));
}

// ---------------------------------------------------------------------------------------------------------------
// SqliteStatement

SqliteStatement::SqliteStatement(SqliteStatement&& other) noexcept
    : stmt_(other.stmt_),
      owned_(other.owned_),
      in_use_(other.in_use_),
      bind_rc_(other.bind_rc_),
      bind_error_(std::move(other.bind_error_)) {
  other.stmt_ = nullptr;
  other.in_use_ = nullptr;
}

SqliteStatement::~SqliteStatement() {
  if (stmt_ == nullptr) return;
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
  if (owned_) {
    sqlite3_finalize(stmt_);
  } else if (in_use_ != nullptr) {
    *in_use_ = false;
  }
}

void SqliteStatement::CheckBind(int rc, int index) {
  if (rc == SQLITE_OK || bind_rc_ != 0) return;
  bind_rc_ = rc;
  bind_error_ = "binding parameter " + std::to_string(index) + " of `" + SqlSnippet(stmt_) +
                "`: " + sqlite3_errstr(rc);
}

SqliteStatement& SqliteStatement::BindNull(int index) {
  CheckBind(sqlite3_bind_null(stmt_, index), index);
  return *this;
}

SqliteStatement& SqliteStatement::BindInt(int index, int64_t value) {
  CheckBind(sqlite3_bind_int64(stmt_, index, value), index);
  return *this;
}

SqliteStatement& SqliteStatement::BindDouble(int index, double value) {
  CheckBind(sqlite3_bind_double(stmt_, index, value), index);
  return *this;
}

SqliteStatement& SqliteStatement::BindText(int index, std::string_view value) {
  CheckBind(sqlite3_bind_text64(stmt_, index, value.data(), value.size(), SQLITE_TRANSIENT, SQLITE_UTF8), index);
  return *this;
}

SqliteStatement& SqliteStatement::BindBlob(int index, std::string_view bytes) {
  CheckBind(sqlite3_bind_blob64(stmt_, index, bytes.data(), bytes.size(), SQLITE_TRANSIENT), index);
  return *this;
}

SqliteStatement& SqliteStatement::BindOptionalText(int index, const std::optional<std::string>& value) {
  return value ? BindText(index, *value) : BindNull(index);
}

SqliteStatement& SqliteStatement::BindOptionalInt(int index, const std::optional<int64_t>& value) {
  return value ? BindInt(index, *value) : BindNull(index);
}

SqliteStatement& SqliteStatement::BindOptionalDouble(int index, const std::optional<double>& value) {
  return value ? BindDouble(index, *value) : BindNull(index);
}

Status SqliteStatement::BindStatus() const {
  if (bind_rc_ == 0) return Ok();
  return MakeError(bind_rc_ == SQLITE_TOOBIG ? ErrorKind::kInvalidArgument : ErrorKind::kInternal, bind_error_);
}

Result<bool> SqliteStatement::Step() {
  IMGPIPE_TRY(BindStatus());
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return SqliteError(sqlite3_db_handle(stmt_), rc, "running `" + SqlSnippet(stmt_) + "`");
}

Status SqliteStatement::Run() {
  while (true) {
    IMGPIPE_ASSIGN_OR_RETURN(bool row, Step());
    if (!row) return Ok();
  }
}

int SqliteStatement::ColumnCount() const { return sqlite3_column_count(stmt_); }
bool SqliteStatement::IsNull(int column) const { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }
int64_t SqliteStatement::Int(int column) const { return sqlite3_column_int64(stmt_, column); }
double SqliteStatement::Double(int column) const { return sqlite3_column_double(stmt_, column); }

std::string SqliteStatement::Text(int column) const {
  const unsigned char* text = sqlite3_column_text(stmt_, column);
  if (text == nullptr) return {};
  return std::string(reinterpret_cast<const char*>(text), static_cast<size_t>(sqlite3_column_bytes(stmt_, column)));
}

std::optional<std::string> SqliteStatement::OptionalText(int column) const {
  if (IsNull(column)) return std::nullopt;
  return Text(column);
}

std::optional<int64_t> SqliteStatement::OptionalInt(int column) const {
  if (IsNull(column)) return std::nullopt;
  return Int(column);
}

std::optional<double> SqliteStatement::OptionalDouble(int column) const {
  if (IsNull(column)) return std::nullopt;
  return Double(column);
}

// ---------------------------------------------------------------------------------------------------------------
// SqliteConnection

SqliteConnection::~SqliteConnection() {
  for (auto& [sql, cached] : cache_) sqlite3_finalize(cached->stmt);
  sqlite3_close_v2(db_);
}

Result<SqliteStatement> SqliteConnection::Prepare(std::string_view sql) {
  std::string key(sql);
  auto it = cache_.find(key);
  if (it != cache_.end()) {
    if (it->second->in_use) return PrepareUncached(sql);
    it->second->in_use = true;
    return SqliteStatement(it->second->stmt, /*owned=*/false, &it->second->in_use);
  }
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT, &stmt,
                              nullptr);
  if (rc != SQLITE_OK) return SqliteError(db_, rc, "preparing `" + key.substr(0, 60) + "`");
  auto cached = std::make_unique<Cached>();
  cached->stmt = stmt;
  cached->in_use = true;
  bool* in_use = &cached->in_use;
  cache_.emplace(std::move(key), std::move(cached));
  return SqliteStatement(stmt, /*owned=*/false, in_use);
}

Result<SqliteStatement> SqliteConnection::PrepareUncached(std::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
  if (rc != SQLITE_OK) {
    return SqliteError(db_, rc, "preparing `" + std::string(sql.substr(0, 60)) + "`");
  }
  return SqliteStatement(stmt, /*owned=*/true, nullptr);
}

Status SqliteConnection::Exec(std::string_view sql) {
  std::string script(sql);
  int rc = sqlite3_exec(db_, script.c_str(), nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return SqliteError(db_, rc, "executing `" + script.substr(0, 60) + "`");
  return Ok();
}

int64_t SqliteConnection::Changes() const { return sqlite3_changes64(db_); }
int64_t SqliteConnection::LastInsertRowId() const { return sqlite3_last_insert_rowid(db_); }

// ---------------------------------------------------------------------------------------------------------------
// ConnectionPool

//! Up to `max` connections, opened on demand by `open`; Acquire waits while all are lent out.
class ConnectionPool {
 public:
  using Opener = std::function<Result<std::unique_ptr<SqliteConnection>>()>;

  ConnectionPool(size_t max, Opener open) : max_(max == 0 ? 1 : max), open_(std::move(open)) {}

  Result<std::unique_ptr<SqliteConnection>> Acquire() {
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return !idle_.empty() || opened_ < max_; });
      if (!idle_.empty()) {
        auto conn = std::move(idle_.back());
        idle_.pop_back();
        return conn;
      }
      ++opened_;
    }
    auto conn = open_();
    if (!conn.ok()) {
      std::lock_guard lock(mu_);
      --opened_;
      cv_.notify_one();
    }
    return conn;
  }

  void Release(std::unique_ptr<SqliteConnection> conn) {
    // A connection goes back clean: no transaction left open by an error path.
    if (sqlite3_get_autocommit(conn->handle()) == 0) sqlite3_exec(conn->handle(), "ROLLBACK", nullptr, nullptr, nullptr);
    std::lock_guard lock(mu_);
    idle_.push_back(std::move(conn));
    cv_.notify_one();
  }

 private:
  const size_t max_;
  Opener open_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<SqliteConnection>> idle_;
  size_t opened_ = 0;
};

namespace {

//! Lends a pooled connection for one scope.
class Borrowed {
 public:
  Borrowed(ConnectionPool& pool, std::unique_ptr<SqliteConnection> conn) : pool_(pool), conn_(std::move(conn)) {}
  ~Borrowed() { pool_.Release(std::move(conn_)); }
  SqliteConnection& operator*() { return *conn_; }
  SqliteConnection* operator->() { return conn_.get(); }

 private:
  ConnectionPool& pool_;
  std::unique_ptr<SqliteConnection> conn_;
};

enum class ConnectionKind { kWriter, kReader, kUntrusted };

// SQLite's file header; an encrypted database starts with random bytes instead.
constexpr std::string_view kSqliteHeader{"SQLite format 3\0", 16};

// Keys the connection and reads the schema once, so a wrong key (or a plaintext file given a key, or an encrypted
// one given none) fails here with a message that says which, not at the first query.
Status KeyAndCheck(SqliteConnection& conn, const std::filesystem::path& path, const std::string& key) {
  sqlite3* db = conn.handle();
  if (!key.empty()) {
    int rc = sqlite3_key_v2(db, "main", key.data(), static_cast<int>(key.size()));
    if (rc != SQLITE_OK) return SqliteError(db, rc, "setting the key of database " + path.string());
  }
  Status read = [&]() -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto stmt, conn.PrepareUncached("SELECT count(*) FROM sqlite_schema"));
    return stmt.Run();
  }();
  if (read.ok()) return Ok();
  if ((sqlite3_extended_errcode(db) & 0xff) != SQLITE_NOTADB) return read;
  if (key.empty()) {
    return MakeError(ErrorKind::kConflict, "database " + path.string() +
                                               " is encrypted (or is not a SQLite database): open it with "
                                               "database.encrypt = true and the key provider it was created with");
  }
  return MakeError(ErrorKind::kIntegrity,
                   "database " + path.string() +
                       " does not open with the warehouse key (a wrong key: another keyring or token than the one "
                       "it was created with, or a replaced key file; or the file is damaged or not a database)",
                   "integrity_error");
}

struct ConnectionSettings {
  std::chrono::milliseconds busy_timeout;
  std::string key;
};

Result<std::unique_ptr<SqliteConnection>> OpenConnection(const std::filesystem::path& path, ConnectionKind kind,
                                                         const ConnectionSettings& settings) {
  int flags = SQLITE_OPEN_NOMUTEX;
  flags |= kind == ConnectionKind::kUntrusted ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
  if (rc != SQLITE_OK) {
    Error error = SqliteError(db, rc, "opening database " + path.string());
    error.kind = ErrorKind::kUnavailable;
    sqlite3_close_v2(db);
    return error;
  }
  auto conn = std::make_unique<SqliteConnection>(db);
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, static_cast<int>(settings.busy_timeout.count()));
  IMGPIPE_TRY(KeyAndCheck(*conn, path, settings.key));

  switch (kind) {
    case ConnectionKind::kWriter: {
      // journal_mode is persistent in the file; asking again when it is already WAL is a no-op.
      IMGPIPE_ASSIGN_OR_RETURN(auto stmt, conn->PrepareUncached("PRAGMA journal_mode=WAL"));
      IMGPIPE_ASSIGN_OR_RETURN(bool row, stmt.Step());
      std::string mode = row ? stmt.Text(0) : "";
      if (mode != "wal") {
        return MakeError(ErrorKind::kUnavailable, "database " + path.string() +
                                                      " could not be switched to WAL mode (journal_mode is '" + mode +
                                                      "'); the folder must be on a local file system");
      }
      IMGPIPE_TRY(conn->Exec("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"));
      break;
    }
    case ConnectionKind::kReader:
      IMGPIPE_TRY(conn->Exec("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA query_only=1;"));
      break;
    case ConnectionKind::kUntrusted:
      sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, nullptr);
      // Views run by analysts may not call functions with side effects. (Not on our own connections: SQLite 3.40
      // does not mark json_valid(), used in a CHECK, as innocuous.)
      sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, nullptr);
      sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, nullptr);
      sqlite3_limit(db, SQLITE_LIMIT_LENGTH, kUntrustedMaxValueBytes);
      sqlite3_limit(db, SQLITE_LIMIT_ATTACHED, 0);
      IMGPIPE_TRY(conn->Exec("PRAGMA query_only=1;"));
      break;
  }
  return conn;
}

//! Rolls back the writer's transaction if the scope is left with one still open (an error or an exception).
class RollbackGuard {
 public:
  explicit RollbackGuard(SqliteConnection& conn) : conn_(conn) {}
  ~RollbackGuard() {
    if (sqlite3_get_autocommit(conn_.handle()) == 0) sqlite3_exec(conn_.handle(), "ROLLBACK", nullptr, nullptr, nullptr);
  }

 private:
  SqliteConnection& conn_;
};

Status RunCached(SqliteConnection& conn, std::string_view sql) {
  IMGPIPE_ASSIGN_OR_RETURN(auto stmt, conn.Prepare(sql));
  return stmt.Run();
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// SqliteDatabase

SqliteDatabase::SqliteDatabase(std::filesystem::path path, Options options)
    : path_(std::move(path)), options_(options) {}

SqliteDatabase::~SqliteDatabase() = default;

Result<std::unique_ptr<SqliteDatabase>> SqliteDatabase::Open(const std::filesystem::path& path, Options options) {
  if (path.empty()) return MakeError(ErrorKind::kInvalidArgument, "database path is empty");
  if (path.has_parent_path()) {
    std::error_code ec;
    std::filesystem::create_directories(path.parent_path(), ec);
    if (ec) {
      return MakeError(ErrorKind::kUnavailable, "cannot create the database folder " + path.parent_path().string() +
                                                    ": " + ec.message());
    }
  }
  if (!options.key.empty() && IsPlaintextDatabase(path)) {
    return MakeError(ErrorKind::kConflict,
                     "database " + path.string() +
                         " is not encrypted, but database.encrypt is on: stop imgpipe and run `imgpipe db encrypt` "
                         "to encrypt it in place, or set database.encrypt = false to keep it in plaintext");
  }
  std::unique_ptr<SqliteDatabase> db(new SqliteDatabase(path, options));
  auto settings = std::make_shared<const ConnectionSettings>(ConnectionSettings{options.busy_timeout, options.key});
  IMGPIPE_ASSIGN_OR_RETURN(db->writer_, OpenConnection(path, ConnectionKind::kWriter, *settings));
  db->readers_ = std::make_unique<ConnectionPool>(
      options.readers, [path, settings] { return OpenConnection(path, ConnectionKind::kReader, *settings); });
  db->untrusted_ = std::make_unique<ConnectionPool>(options.query_connections, [path, settings] {
    return OpenConnection(path, ConnectionKind::kUntrusted, *settings);
  });
  return db;
}

Status SqliteDatabase::BackupTo(const std::filesystem::path& dest) {
  std::error_code ec;
  if (std::filesystem::exists(dest, ec)) {
    return MakeError(ErrorKind::kConflict, "backup target " + dest.string() + " exists; choose a new file");
  }
  IMGPIPE_ASSIGN_OR_RETURN(auto target, OpenConnection(dest, ConnectionKind::kWriter,
                                                       ConnectionSettings{options_.busy_timeout, options_.key}));
  return Read([&](SqliteConnection& source) -> Status {
    sqlite3_backup* backup = sqlite3_backup_init(target->handle(), "main", source.handle(), "main");
    if (backup == nullptr) return SqliteError(target->handle(), sqlite3_errcode(target->handle()), "starting a backup");
    int rc = sqlite3_backup_step(backup, -1);
    sqlite3_backup_finish(backup);
    if (rc != SQLITE_DONE) return SqliteError(target->handle(), rc, "backing up into " + dest.string());
    return Ok();
  });
}

bool SqliteDatabase::IsPlaintextDatabase(const std::filesystem::path& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return false;
  char head[16];
  size_t n = std::fread(head, 1, sizeof head, f);
  std::fclose(f);
  return n == sizeof head && std::string_view(head, n) == kSqliteHeader;
}

Status SqliteDatabase::EncryptInPlace(const std::filesystem::path& path, const std::string& key) {
  if (key.empty()) return MakeError(ErrorKind::kInvalidArgument, "encrypting a database needs a key");
  if (!IsPlaintextDatabase(path)) {
    return MakeError(ErrorKind::kConflict, "database " + path.string() + " is not a plaintext SQLite database");
  }
  const std::filesystem::path target = path.string() + ".encrypting";
  std::error_code ec;
  std::filesystem::remove(target, ec);  // left by an export that crashed: the plaintext file is still whole
  {
    IMGPIPE_ASSIGN_OR_RETURN(auto conn,
                             OpenConnection(path, ConnectionKind::kWriter, ConnectionSettings{std::chrono::seconds(5), ""}));
    // Everything in the WAL goes into the main file first, so the export and the old -wal agree.
    IMGPIPE_TRY(conn->Exec("PRAGMA wal_checkpoint(TRUNCATE)"));
    // Each statement in its own scope: one still open would keep the attached database locked at DETACH.
    int64_t user_version = 0;
    {
      IMGPIPE_ASSIGN_OR_RETURN(auto version_stmt, conn->PrepareUncached("PRAGMA user_version"));
      IMGPIPE_ASSIGN_OR_RETURN(bool has_row, version_stmt.Step());
      if (has_row) user_version = version_stmt.Int(0);
    }
    {
      IMGPIPE_ASSIGN_OR_RETURN(auto attach, conn->PrepareUncached("ATTACH DATABASE ?1 AS encrypted KEY ?2"));
      attach.BindText(1, target.string()).BindText(2, key);
      IMGPIPE_TRY(attach.Run());
    }
    // The copy's journal mode is set to WAL by the first writer that opens it.
    IMGPIPE_TRY(conn->Exec("SELECT sqlcipher_export('encrypted'); PRAGMA encrypted.user_version = " +
                           std::to_string(user_version) + ";"));
    IMGPIPE_TRY(conn->Exec("DETACH DATABASE encrypted"));
  }  // the last connection closes: SQLite removes the plaintext file's -wal and -shm
  for (const char* suffix : {"-wal", "-shm"}) std::filesystem::remove(path.string() + suffix, ec);
  int fd = ::open(target.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || ::fsync(fd) != 0) {
    if (fd >= 0) ::close(fd);
    return MakeError(ErrorKind::kUnavailable, "cannot sync " + target.string() + ": " + std::strerror(errno));
  }
  ::close(fd);
  std::filesystem::rename(target, path, ec);
  if (ec) {
    return MakeError(ErrorKind::kUnavailable,
                     "cannot move " + target.string() + " over " + path.string() + ": " + ec.message());
  }
  int dfd = ::open(path.parent_path().empty() ? "." : path.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return Ok();
}

struct SqliteDatabase::WriteRequest {
  const std::function<Status(SqliteConnection&)>* fn;
  Status status;
  bool done = false;
};

Status SqliteDatabase::Write(const std::function<Status(SqliteConnection&)>& fn) {
  if (writer_thread_.load() == std::this_thread::get_id()) {
    return MakeError(ErrorKind::kInternal,
                     "SqliteDatabase::Write called inside another Write on the same thread; use the connection the "
                     "outer Write passed in");
  }
  WriteRequest request{&fn, Ok()};
  std::unique_lock lock(write_mu_);
  pending_.push_back(&request);
  while (!request.done) {
    if (leader_active_) {
      write_cv_.wait(lock);
      continue;
    }
    // Lead: take everything queued so far (including this request) and commit it together.
    leader_active_ = true;
    std::vector<WriteRequest*> batch;
    batch.swap(pending_);
    lock.unlock();
    RunBatch(batch);
    lock.lock();
    for (WriteRequest* r : batch) r->done = true;
    leader_active_ = false;
    write_cv_.notify_all();  // the batch's callers return; one of the waiting ones leads next
  }
  return request.status;
}

void SqliteDatabase::RunBatch(const std::vector<WriteRequest*>& batch) {
  writer_thread_ = std::this_thread::get_id();
  struct ClearOwner {
    std::atomic<std::thread::id>& owner;
    ~ClearOwner() { owner = std::thread::id(); }
  } clear_owner{writer_thread_};
  SqliteConnection& conn = *writer_;

  size_t next = 0;
  while (next < batch.size()) {
    // One transaction for batch[first..next); restarted for the rest if SQLite abandons it.
    const size_t first = next;
    RollbackGuard guard(conn);
    if (Status begin = RunCached(conn, "BEGIN IMMEDIATE"); !begin.ok()) {
      for (size_t i = first; i < batch.size(); ++i) batch[i]->status = begin;
      return;
    }
    std::optional<Error> abandoned;  // set when the transaction as a whole is lost
    for (; next < batch.size() && !abandoned; ++next) {
      WriteRequest& r = *batch[next];
      if (Status s = RunCached(conn, "SAVEPOINT imgpipe_write"); !s.ok()) {
        abandoned = s.error();
        continue;
      }
      try {
        r.status = (*r.fn)(conn);
      } catch (const std::exception& e) {
        r.status = MakeError(ErrorKind::kInternal, std::string("exception in a database write: ") + e.what());
      }
      if (sqlite3_get_autocommit(conn.handle()) != 0) {
        // SQLite rolled the whole transaction back (I/O error, disk full...): earlier calls' changes are gone too.
        abandoned = MakeError(ErrorKind::kUnavailable, std::string("the database rolled back the write "
                                                                   "transaction: ") + sqlite3_errmsg(conn.handle()));
        continue;
      }
      if (!r.status.ok()) {
        if (Status s = RunCached(conn, "ROLLBACK TO imgpipe_write"); !s.ok()) abandoned = s.error();
      }
      if (Status s = RunCached(conn, "RELEASE imgpipe_write"); !s.ok() && !abandoned) abandoned = s.error();
    }
    if (!abandoned) {
      if (Status commit = RunCached(conn, "COMMIT"); !commit.ok()) abandoned = commit.error();
    }
    if (abandoned) {
      // Nothing of this transaction is kept (the guard rolls back what is left): fail the calls that had succeeded.
      for (size_t i = first; i < next; ++i) {
        if (batch[i]->status.ok()) batch[i]->status = *abandoned;
      }
    }
  }
}

Status SqliteDatabase::Read(const std::function<Status(SqliteConnection&)>& fn) {
  IMGPIPE_ASSIGN_OR_RETURN(auto conn, readers_->Acquire());
  Borrowed reader(*readers_, std::move(conn));
  IMGPIPE_TRY(RunCached(*reader, "BEGIN"));
  Status status = fn(*reader);
  if (!status.ok()) return status;  // Release() rolls the read transaction back.
  return RunCached(*reader, "COMMIT");
}

Status SqliteDatabase::RunUntrusted(const std::function<Status(SqliteConnection&)>& fn) {
  IMGPIPE_ASSIGN_OR_RETURN(auto conn, untrusted_->Acquire());
  Borrowed untrusted(*untrusted_, std::move(conn));
  struct ClearHooks {
    sqlite3* db;
    ~ClearHooks() {
      sqlite3_set_authorizer(db, nullptr, nullptr);
      sqlite3_progress_handler(db, 0, nullptr, nullptr);
    }
  } clear_hooks{untrusted->handle()};
  return fn(*untrusted);
}

}  // namespace imgpipe
