#include "audit/audit_log.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "core/ids.hpp"

namespace imgpipe {
namespace {

namespace fs = std::filesystem;
using std::chrono::hours;

class AuditLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("imgpipe-audit-" + HexEncode(RandomBytes(6)));
    auto log = AuditLog::Open(dir_, clock_);
    ASSERT_TRUE(log.ok()) << log.error().message;
    log_ = std::move(*log);
  }
  void TearDown() override {
    log_.reset();
    fs::remove_all(dir_);
  }

  AuditEvent Event(std::string action, std::string target = "", std::string actor = "k_admin") {
    AuditEvent e;
    e.at = clock_.Now();
    e.actor = std::move(actor);
    e.action = std::move(action);
    e.target = std::move(target);
    e.remote = "127.0.0.1";
    e.outcome = "ok";
    return e;
  }

  std::vector<std::string> Problems() {
    auto report = AuditLog::Verify(dir_);
    EXPECT_TRUE(report.ok());
    return report.ok() ? report->problems : std::vector<std::string>{"verify failed"};
  }

  fs::path OnlyFile() {
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(dir_)) {
      if (e.path().extension() == ".jsonl") files.push_back(e.path());
    }
    EXPECT_EQ(files.size(), 1u);
    return files.empty() ? fs::path() : files[0];
  }

  std::vector<std::string> Lines(const fs::path& file) {
    std::ifstream in(file);
    std::vector<std::string> lines;
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    return lines;
  }
  void WriteLines(const fs::path& file, const std::vector<std::string>& lines) {
    std::ofstream out(file, std::ios::trunc);
    for (const auto& l : lines) out << l << "\n";
  }

  fs::path dir_;
  FakeClock clock_{FromUnixMicros(1'764'111'342'000'000)};
  std::unique_ptr<AuditLog> log_;
};

TEST_F(AuditLogTest, AppendsReadBackNewestFirstAndVerify) {
  AuditEvent query = Event("query");
  query.details["sql"] = "SELECT 1";
  ASSERT_TRUE(log_->Append(Event("image.upload", "01ABC")).ok());
  ASSERT_TRUE(log_->Append(query).ok());
  ASSERT_TRUE(log_->Append(Event("key.create", "k_new")).ok());
  auto records = log_->Read({});
  ASSERT_TRUE(records.ok());
  ASSERT_EQ(records->size(), 3u);
  EXPECT_EQ((*records)[0].event.action, "key.create");
  EXPECT_EQ((*records)[0].seq, 3);
  EXPECT_EQ((*records)[1].event.details.at("sql").as_string(), "SELECT 1");
  EXPECT_EQ((*records)[2].prev, std::string(64, '0'));
  EXPECT_EQ((*records)[1].prev, (*records)[2].hash);
  AuditFilter only_queries;
  only_queries.action = "query";
  EXPECT_EQ(log_->Read(only_queries)->size(), 1u);
  auto report = AuditLog::Verify(dir_);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->records, 3);
  EXPECT_TRUE(report->problems.empty());
}

TEST_F(AuditLogTest, EditingALineIsDetectedWithItsPlace) {
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(log_->Append(Event("image.read", "img" + std::to_string(i))).ok());
  fs::path file = OnlyFile();
  auto lines = Lines(file);
  const size_t at = lines[2].find("img2");
  ASSERT_NE(at, std::string::npos);
  lines[2].replace(at, 4, "img9");
  WriteLines(file, lines);
  auto problems = Problems();
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find(file.filename().string() + ":3: record 3 was changed"), std::string::npos)
      << problems[0];
}

TEST_F(AuditLogTest, RemovedReorderedOrForgedLinesAreDetected) {
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(log_->Append(Event("image.read", "img" + std::to_string(i))).ok());
  fs::path file = OnlyFile();
  const auto original = Lines(file);

  auto removed = original;
  removed.erase(removed.begin() + 1);
  WriteLines(file, removed);
  EXPECT_FALSE(Problems().empty()) << "a removed line";

  auto swapped = original;
  std::swap(swapped[1], swapped[2]);
  WriteLines(file, swapped);
  EXPECT_FALSE(Problems().empty()) << "two lines swapped";

  auto truncated_start = original;
  truncated_start.erase(truncated_start.begin());
  WriteLines(file, truncated_start);
  EXPECT_FALSE(Problems().empty()) << "the first line removed, with no retention record to explain it";

  WriteLines(file, original);
  EXPECT_TRUE(Problems().empty());
}

TEST_F(AuditLogTest, RetentionRemovesOldDaysAndTheChainStillVerifies) {
  ASSERT_TRUE(log_->Append(Event("image.upload", "old1")).ok());
  ASSERT_TRUE(log_->Append(Event("image.upload", "old2")).ok());
  clock_.Advance(hours(24 * 40));
  ASSERT_TRUE(log_->Append(Event("image.upload", "new1")).ok());
  auto pruned = log_->Prune(std::chrono::hours(24 * 30));
  ASSERT_TRUE(pruned.ok()) << pruned.error().message;
  EXPECT_EQ(*pruned, 1);
  auto report = AuditLog::Verify(dir_);
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->problems.empty()) << report->problems[0];
  EXPECT_EQ(report->first_seq, 3);
  EXPECT_EQ(report->records, 2);  // new1 and the retention record
  auto records = log_->Read({});
  EXPECT_EQ((*records)[0].event.action, "audit.retention");
}

TEST_F(AuditLogTest, ConcurrentWritersInThreadsAndProcessesKeepOneChain) {
  // Another process (as `imgpipe hold set` beside `serve`) appends to the same folder while threads here do.
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    SystemClock clock;
    auto other = AuditLog::Open(dir_, clock);
    bool ok = other.ok();
    for (int i = 0; ok && i < 50; ++i) {
      AuditEvent e;
      e.at = clock.Now();
      e.actor = "cli";
      e.action = "hold.set";
      e.outcome = "ok";
      ok = (*other)->Append(e).ok();
    }
    _exit(ok ? 0 : 1);
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 25; ++i) EXPECT_TRUE(log_->Append(Event("image.upload")).ok());
    });
  }
  for (auto& t : threads) t.join();
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  auto report = AuditLog::Verify(dir_);
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->problems.empty()) << report->problems[0];
  EXPECT_EQ(report->records, 150);
}

TEST_F(AuditLogTest, ARecordLongerThanTheTailChunkStillContinuesTheChain) {
  // The last line is found by reading the file's end in growing chunks; a long query text spans several.
  AuditEvent long_one = Event("query");
  long_one.details["sql"] = std::string(100000, 'x');
  ASSERT_TRUE(log_->Append(Event("image.upload")).ok());
  ASSERT_TRUE(log_->Append(long_one).ok());
  ASSERT_TRUE(log_->Append(Event("image.delete")).ok());
  auto report = AuditLog::Verify(dir_);
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->problems.empty()) << report->problems[0];
  EXPECT_EQ(report->records, 3);
  auto records = log_->Read({});
  ASSERT_TRUE(records.ok());
  ASSERT_EQ(records->size(), 3u);
  EXPECT_EQ((*records)[0].seq, 3);
  EXPECT_EQ((*records)[1].event.details.at("sql").as_string().size(), 100000u);
}

TEST(AuditLinesTest, HostileFilesAreProblemsNeverRecords) {
  // Files of the corrupt image corpus as audit day files: every line is refused with its place, nothing crashes.
  const fs::path corrupt = fs::path(IMGPIPE_CORPORA_DIR) / "corrupt";
  ASSERT_TRUE(fs::is_directory(corrupt)) << corrupt;
  int files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(corrupt)) {
    if (!entry.is_regular_file() || entry.file_size() > 1 << 20) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::vector<AuditLine> lines;
    for (std::string l; std::getline(in, l);) lines.push_back({"f:" + std::to_string(lines.size() + 1), l});
    AuditVerifyReport report = VerifyAuditLines(lines);
    EXPECT_EQ(report.records, 0) << entry.path();
    if (!lines.empty()) EXPECT_FALSE(report.problems.empty()) << entry.path();
    ++files;
  }
  EXPECT_GT(files, 10);
}

}  // namespace
}  // namespace imgpipe
