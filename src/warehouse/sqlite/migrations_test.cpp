// The dashboard's overview queries (web/src/queries.ts) on SQLite read a time range from an index that holds every
// column they need (migration 4): without it a 30-day range costs one table lookup per row (docs/BENCHMARKS.md).
#include "warehouse/sqlite/migrations.hpp"

#include <gtest/gtest.h>

#include <stdlib.h>

#include <filesystem>
#include <string>

#include "core/clock.hpp"

namespace imgpipe {
namespace {

class SqliteOverviewIndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "imgpipe-migrations-XXXXXX").string();
    dir_ = mkdtemp(pattern.data());
    auto db = SqliteDatabase::Open(dir_ / "warehouse.db");
    ASSERT_TRUE(db.ok()) << db.error().message;
    db_ = std::move(db).value();
    FakeClock clock(std::chrono::system_clock::now());
    Status migrated = ApplySqliteMigrations(*db_, clock);
    ASSERT_TRUE(migrated.ok()) << migrated.error().message;
  }
  void TearDown() override {
    db_.reset();
    std::filesystem::remove_all(dir_);
  }

  //! SQLite's plan for `sql`, its detail lines joined by " | ".
  std::string Plan(const std::string& sql) {
    std::string plan;
    Status s = db_->Read([&](SqliteConnection& conn) -> Status {
      IMGPIPE_ASSIGN_OR_RETURN(auto stmt, conn.PrepareUncached("EXPLAIN QUERY PLAN " + sql));
      for (;;) {
        IMGPIPE_ASSIGN_OR_RETURN(bool row, stmt.Step());
        if (!row) return Ok();
        plan += (plan.empty() ? "" : " | ") + stmt.Text(3);
      }
    });
    EXPECT_TRUE(s.ok()) << sql << ": " << (s.ok() ? "" : s.error().message);
    return plan;
  }

  std::filesystem::path dir_;
  std::unique_ptr<SqliteDatabase> db_;
};

TEST_F(SqliteOverviewIndexTest, SummaryAndIngestReadOnlyTheOverviewIndex) {
  const std::string summary =
      "SELECT count(*), coalesce(sum(bytes), 0), sum(CASE WHEN processed_at IS NOT NULL THEN 1 ELSE 0 END), "
      "sum(CASE WHEN processed_at IS NULL AND error IS NOT NULL THEN 1 ELSE 0 END), "
      "sum(CASE WHEN status IN ('queued', 'processing') THEN 1 ELSE 0 END) "
      "FROM images WHERE received_at >= ?1 AND received_at < ?2";
  EXPECT_NE(Plan(summary).find("COVERING INDEX images_overview"), std::string::npos) << Plan(summary);
  const std::string ingest = "SELECT substr(received_at, 1, 13), source, count(*), sum(bytes) FROM images "
                             "WHERE received_at >= ?1 AND received_at < ?2 GROUP BY 1, 2";
  EXPECT_NE(Plan(ingest).find("COVERING INDEX images_overview"), std::string::npos) << Plan(ingest);
}

TEST_F(SqliteOverviewIndexTest, LatencyReadsRunsByFinishedAtFromTheIndex) {
  const std::string latency = "SELECT total_seconds FROM processing_runs "
                              "WHERE status = 'processed' AND finished_at >= ?1 AND finished_at < ?2";
  EXPECT_NE(Plan(latency).find("COVERING INDEX processing_runs_by_finished_at"), std::string::npos) << Plan(latency);
}

TEST_F(SqliteOverviewIndexTest, ExpirationsReadTheWidenedLiveIndex) {
  const std::string expirations = "SELECT substr(expires_at, 1, 10), count(*), coalesce(sum(bytes), 0) FROM images "
                                  "WHERE status NOT IN ('expired', 'deleted') AND expires_at > ?1 GROUP BY 1";
  EXPECT_NE(Plan(expirations).find("INDEX images_live_by_expires_at"), std::string::npos) << Plan(expirations);
  // Migration 4 widened it: the bytes come from the index, not from a lookup per image.
  std::string columns;
  Status s = db_->Read([&](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto stmt, conn.PrepareUncached(
                                            "SELECT group_concat(name, ',') FROM "
                                            "(SELECT name FROM pragma_index_info('images_live_by_expires_at') "
                                            "ORDER BY seqno)"));
    IMGPIPE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (row) columns = stmt.Text(0);
    return Ok();
  });
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(columns, "expires_at,bytes,id");
}

}  // namespace
}  // namespace imgpipe
