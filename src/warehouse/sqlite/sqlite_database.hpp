#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/result.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace imgpipe {

//! Maps a SQLite result code (extended codes are on for every connection) to an Error. `context` says what was being
//! done ("inserting image 01HX..."); the message is "<context>: <sqlite's message>". Unique and primary-key
//! violations are kConflict, other constraint violations kInvalidArgument, SQLITE_BUSY/LOCKED (another process held
//! the lock past busy_timeout), I/O errors and a full disk kUnavailable, the rest kInternal.
Error SqliteError(sqlite3* db, int rc, std::string_view context);

//! One prepared statement. Parameters are 1-based (as in SQL's ?1), columns 0-based (as in sqlite3_column_*).
//! Destroying it resets the statement and clears its bindings; a cached statement then returns to its connection's
//! cache. Move-only; must not outlive the connection that prepared it.
class SqliteStatement {
 public:
  SqliteStatement(sqlite3_stmt* stmt, bool owned, bool* in_use) : stmt_(stmt), owned_(owned), in_use_(in_use) {}
  SqliteStatement(SqliteStatement&& other) noexcept;
  SqliteStatement& operator=(SqliteStatement&&) = delete;
  SqliteStatement(const SqliteStatement&) = delete;
  ~SqliteStatement();

  // A failed bind (e.g. an index out of range) is remembered and reported by the next Step()/Run().
  SqliteStatement& BindNull(int index);
  SqliteStatement& BindInt(int index, int64_t value);
  SqliteStatement& BindDouble(int index, double value);
  SqliteStatement& BindText(int index, std::string_view value);
  SqliteStatement& BindBlob(int index, std::string_view bytes);
  SqliteStatement& BindOptionalText(int index, const std::optional<std::string>& value);
  SqliteStatement& BindOptionalInt(int index, const std::optional<int64_t>& value);
  SqliteStatement& BindOptionalDouble(int index, const std::optional<double>& value);

  //! true: a row is ready to read; false: the statement is done.
  Result<bool> Step();
  //! Steps until done, discarding rows; for INSERT/UPDATE/DELETE.
  Status Run();
  //! The first failed Bind*() since the statement was handed out, if any (Step() reports it too).
  Status BindStatus() const;

  int ColumnCount() const;
  bool IsNull(int column) const;
  int64_t Int(int column) const;
  double Double(int column) const;
  std::string Text(int column) const;
  std::optional<std::string> OptionalText(int column) const;
  std::optional<int64_t> OptionalInt(int column) const;
  std::optional<double> OptionalDouble(int column) const;

  sqlite3_stmt* handle() const { return stmt_; }

 private:
  sqlite3_stmt* stmt_;
  bool owned_;
  bool* in_use_;
  int bind_rc_ = 0;
  std::string bind_error_;
  void CheckBind(int rc, int index);
};

//! One sqlite3 connection and its cache of prepared statements. Used by one thread at a time (the SqliteDatabase
//! hands it out under a lock); connections are opened in SQLite's multi-thread mode.
class SqliteConnection {
 public:
  explicit SqliteConnection(sqlite3* db) : db_(db) {}
  ~SqliteConnection();
  SqliteConnection(const SqliteConnection&) = delete;
  SqliteConnection& operator=(const SqliteConnection&) = delete;

  //! A statement from this connection's cache (prepared on first use). If the same SQL is still in use by a live
  //! SqliteStatement (nested iteration), a fresh uncached statement is returned instead.
  Result<SqliteStatement> Prepare(std::string_view sql);
  //! A statement that is finalized when destroyed; for one-off SQL that should not fill the cache.
  Result<SqliteStatement> PrepareUncached(std::string_view sql);
  //! Runs a script of one or more statements (no parameters, rows discarded).
  Status Exec(std::string_view sql);

  //! Rows changed by the last INSERT/UPDATE/DELETE on this connection.
  int64_t Changes() const;
  int64_t LastInsertRowId() const;
  sqlite3* handle() const { return db_; }

 private:
  struct Cached {
    sqlite3_stmt* stmt = nullptr;
    bool in_use = false;
  };
  sqlite3* db_;
  std::unordered_map<std::string, std::unique_ptr<Cached>> cache_;
};

class ConnectionPool;

//! The connections to one SQLite database file: one writer, a small pool of readers, and a separate pool for
//! untrusted (analyst) SQL. Every connection has WAL mode, synchronous=FULL (a committed transaction survives kill -9
//! and power loss), foreign keys on, extended result codes and busy_timeout, so several processes may use the same
//! file (e.g. `imgpipe keys create` while `imgpipe serve` runs). Thread-safe.
//! Lifetimes: every Write/Read/RunUntrusted call must have returned before the database is destroyed.
class SqliteDatabase {
 public:
  struct Options {
    size_t readers = 4;           //!< reader connections, opened lazily; Read() waits when all are busy
    size_t query_connections = 2; //!< connections for RunUntrusted()
    //! How long a connection waits for another process's lock before failing with kUnavailable.
    std::chrono::milliseconds busy_timeout{5000};
    //! SQLCipher key, given to every connection before its first read (sqlite3_key_v2, the same as PRAGMA key):
    //! the raw-key form "x'<64 hex>'" (docs/ENCRYPTION.md, "The warehouse"). Empty: a plaintext database.
    std::string key;
  };

  //! Opens (creating if needed, with its parent folders) the database at `path` and switches it to WAL mode.
  //! kUnavailable naming the path if the folder or file cannot be created or opened.
  static Result<std::unique_ptr<SqliteDatabase>> Open(const std::filesystem::path& path, Options options);
  //! With options.key: kIntegrity naming the file when it does not open under the key (a wrong key, or not a
  //! database), kConflict when the file is a plaintext database (EncryptInPlace converts it).
  //! Without: kConflict when the file is encrypted or not a database.
  static Result<std::unique_ptr<SqliteDatabase>> Open(const std::filesystem::path& path) {
    return Open(path, Options{});
  }

  //! true if `path` is an existing plaintext SQLite database (it starts with SQLite's header); an encrypted one
  //! starts with random bytes.
  static bool IsPlaintextDatabase(const std::filesystem::path& path);

  //! Encrypts the plaintext database at `path` with `key` (the raw-key form, as Options::key): SQLCipher's
  //! sqlcipher_export into `<path>.encrypting`, then a rename over the original, so a crash leaves the plaintext
  //! database or the encrypted one, whole. The caller must make sure no other process uses the file (`imgpipe db
  //! encrypt` holds the data folder's lock). The plaintext file's old pages are gone with it, but copies may remain
  //! on the disk's free blocks: see docs/OPERATIONS.md.
  static Status EncryptInPlace(const std::filesystem::path& path, const std::string& key);
  ~SqliteDatabase();

  //! Runs `fn` in a write transaction on the single writer connection and returns once it is committed: when Write
  //! returns ok the changes are durable. If `fn` fails, its changes are rolled back and its error returned.
  //! Group commit: calls arriving while a commit is in progress are run one after another (each inside its own
  //! SAVEPOINT, so one caller's failure undoes only its own changes) in one BEGIN IMMEDIATE transaction with one
  //! fsync. So `fn` may see the committed-to-be changes of calls before it, exactly as if they had committed first.
  //! Other processes wait on busy_timeout. `fn` runs on whichever thread leads the batch; it must not call Write()
  //! again (that returns kInternal instead of deadlocking) and should use the connection it is given: readers do
  //! not see uncommitted changes. An exception thrown by `fn` becomes kInternal for that call.
  Status Write(const std::function<Status(SqliteConnection&)>& fn);
  //! Runs `fn` on a reader connection inside one read transaction, so all its statements see the same snapshot.
  //! Readers never wait for the writer (WAL). The connection is query_only.
  Status Read(const std::function<Status(SqliteConnection&)>& fn);
  //! Runs `fn` on a connection meant for untrusted SQL: opened SQLITE_OPEN_READONLY, PRAGMA query_only=1, defensive
  //! mode, no extension loading, values capped at 16 MiB. `fn` may install an authorizer and a progress handler;
  //! both are removed when it returns.
  Status RunUntrusted(const std::function<Status(SqliteConnection&)>& fn);

  //! Writes a consistent copy of the database to `dest` (a new file; an existing one is refused) with SQLite's
  //! online backup, while writers go on. The copy is encrypted with the same key as this database (it opens with
  //! the same key file), or plaintext when this one is.
  Status BackupTo(const std::filesystem::path& dest);

  const std::filesystem::path& path() const { return path_; }

 private:
  SqliteDatabase(std::filesystem::path path, Options options);

  std::filesystem::path path_;
  Options options_;
  struct WriteRequest;
  //! Runs a batch of Write() calls, committing as few transactions as possible; sets each request's status.
  void RunBatch(const std::vector<WriteRequest*>& batch);

  std::mutex write_mu_;                   //!< guards pending_ and leader_active_
  std::condition_variable write_cv_;      //!< a batch finished
  std::vector<WriteRequest*> pending_;    //!< waiting for the next batch
  bool leader_active_ = false;            //!< a thread is running a batch on writer_
  std::atomic<std::thread::id> writer_thread_{};  //!< the thread running a batch, to refuse nested Write()
  std::unique_ptr<SqliteConnection> writer_;
  std::unique_ptr<ConnectionPool> readers_;
  std::unique_ptr<ConnectionPool> untrusted_;
};

}  // namespace imgpipe
