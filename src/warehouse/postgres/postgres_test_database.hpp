#pragma once
// Test support (header-only, for *_test.cpp files): a fresh schema per test on the PostgreSQL server named by
// IMGPIPE_TEST_POSTGRES_URL (scripts/services/postgres starts one and scripts/test exports the variable). Each test
// binary creates one database of its own (dropped when the binary exits; dropping takes a checkpoint, too slow to do
// per test) and each test a schema in it, dropped with everything in it when the test ends. So runs and tests are
// independent, and every test also proves imgpipe works in a schema other than `public`.

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>

#include "core/ids.hpp"
#include "core/result.hpp"
#include "warehouse/postgres/postgres_database.hpp"

namespace imgpipe {

//! What the environment asks of tests that need PostgreSQL.
struct PostgresTestEnv {
  std::string url;        //!< IMGPIPE_TEST_POSTGRES_URL; empty: no server
  bool required = false;  //!< IMGPIPE_REQUIRE_POSTGRES=1: a missing or unreachable server fails the tests

  static PostgresTestEnv FromEnvironment() {
    PostgresTestEnv env;
    if (const char* url = std::getenv("IMGPIPE_TEST_POSTGRES_URL")) env.url = url;
    if (const char* required = std::getenv("IMGPIPE_REQUIRE_POSTGRES")) env.required = std::string(required) == "1";
    return env;
  }
  //! Why PostgreSQL tests cannot run, for the skip or failure message.
  static constexpr const char* kMissing =
      "IMGPIPE_TEST_POSTGRES_URL is not set; start a server with scripts/services/postgres (scripts/test does) and "
      "export the variable from its .env file";
};

//! A schema created for one test and dropped (CASCADE) when this object goes. url() connects to this binary's test
//! database with the schema first on the search_path, as the server URL's user.
class PostgresTestDatabase {
 public:
  static Result<std::unique_ptr<PostgresTestDatabase>> Create(const std::string& server_url) {
    IMGPIPE_ASSIGN_OR_RETURN(SharedDatabase * shared, SharedDatabase::Get(server_url));
    static std::atomic<int> counter{0};
    const std::string schema = "test_" + std::to_string(counter++) + "_" + HexEncode(RandomBytes(4));
    IMGPIPE_ASSIGN_OR_RETURN(auto conn, PgConnection::Connect(shared->url));
    IMGPIPE_TRY(conn->Exec("CREATE SCHEMA " + schema));
    std::string url = shared->url + " options='-c search_path=" + schema + "'";
    return std::unique_ptr<PostgresTestDatabase>(new PostgresTestDatabase(shared->url, schema, std::move(url)));
  }

  ~PostgresTestDatabase() {
    // A fresh connection: a test may have ended every connection to the database.
    if (auto conn = PgConnection::Connect(database_url_); conn.ok()) {
      (void)(*conn)->Exec("DROP SCHEMA IF EXISTS " + schema_ + " CASCADE");
    }
  }

  const std::string& url() const { return url_; }
  const std::string& schema() const { return schema_; }

 private:
  //! The database of this test binary: imgpipe_test_<pid>_<random>, dropped at exit.
  struct SharedDatabase {
    std::unique_ptr<PgConnection> admin;  //!< on the server URL's database
    std::string name;
    std::string url;

    static Result<SharedDatabase*> Get(const std::string& server_url) {
      static std::mutex mu;
      static std::unique_ptr<SharedDatabase> shared;
      std::lock_guard lock(mu);
      if (shared) return shared.get();
      IMGPIPE_ASSIGN_OR_RETURN(auto admin, PgConnection::Connect(server_url));
      std::string name = "imgpipe_test_" + std::to_string(::getpid()) + "_" + HexEncode(RandomBytes(4));
      IMGPIPE_TRY(admin->Exec("CREATE DATABASE " + name));
      auto url = PgUrlWithDatabase(server_url, name);
      if (!url) return MakeError(ErrorKind::kInvalidArgument, "IMGPIPE_TEST_POSTGRES_URL cannot be parsed");
      shared.reset(new SharedDatabase{std::move(admin), name, *url});
      return shared.get();
    }
    ~SharedDatabase() {
      // WITH (FORCE) ends connections a failed test left open.
      (void)admin->Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)");
    }
  };

  PostgresTestDatabase(std::string database_url, std::string schema, std::string url)
      : database_url_(std::move(database_url)), schema_(std::move(schema)), url_(std::move(url)) {}

  std::string database_url_;  //!< the test database, without the search_path
  std::string schema_;
  std::string url_;
};

}  // namespace imgpipe
