#include "backup/backup.hpp"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <fstream>

#include "core/ids.hpp"
#include "storage/local/local_blob_store.hpp"

namespace imgpipe {
namespace {

namespace fs = std::filesystem;

class BackupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("imgpipe-backup-" + HexEncode(RandomBytes(6)));
    fs::create_directories(dir_ / "data");
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir_ / "data/imgpipe.db").c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, "PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES (42);", nullptr,
                           nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
    std::ofstream(dir_ / "data/keyring.json") << "{\"keys\":\"k\"}";
    blobs_ = std::move(LocalBlobStore::Open((dir_ / "data/blobs").string()).value());
    ASSERT_TRUE(blobs_->Put(kOriginals, "2026/01/01/a/original", "original bytes").ok());
    ASSERT_TRUE(blobs_->Put(kRenditions, "2026/01/01/a/thumb-256.jpg", "thumb").ok());
  }
  void TearDown() override { fs::remove_all(dir_); }

  BackupOptions Options() {
    BackupOptions o;
    o.to = dir_ / "backup";
    o.copy_database = [this](const fs::path& dest) -> Status {
      std::error_code ec;
      fs::copy_file(dir_ / "data/imgpipe.db", dest, ec);  // serve is not running in this test: a file copy is a snapshot
      if (ec) return MakeError(ErrorKind::kUnavailable, ec.message());
      return Ok();
    };
    o.database_backend = "sqlite";
    o.keyring_path = dir_ / "data/keyring.json";
    o.passphrase = "correct horse battery";
    o.now = FromUnixMicros(1'764'111'342'000'000);
    return o;
  }

  fs::path dir_;
  std::unique_ptr<LocalBlobStore> blobs_;
};

TEST_F(BackupTest, BackupVerifyRestoreRoundTrip) {
  auto made = CreateBackup(Options(), *blobs_);
  ASSERT_TRUE(made.ok()) << made.error().message;
  EXPECT_EQ(made->blobs.size(), 2u);
  EXPECT_EQ(made->blobs[0].sha256, Sha256Hex("original bytes"));
  EXPECT_EQ(CreateBackup(Options(), *blobs_).error().kind, ErrorKind::kInvalidArgument) << "not into a used folder";

  auto verified = VerifyBackup(dir_ / "backup");
  ASSERT_TRUE(verified.ok()) << verified.error().message;
  auto target = LocalBlobStore::Open((dir_ / "restored/blobs").string());
  RestoreTarget t{dir_ / "restored/imgpipe.db", dir_ / "restored/keyring.json", {}, "wrong passphrase"};
  Status wrong = RestoreBackup(dir_ / "backup", *verified, t, target->get());
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().kind, ErrorKind::kPermissionDenied);
  EXPECT_FALSE(fs::exists(dir_ / "restored/imgpipe.db")) << "a wrong passphrase writes nothing";

  t.passphrase = "correct horse battery";
  Status restored = RestoreBackup(dir_ / "backup", *verified, t, target->get());
  ASSERT_TRUE(restored.ok()) << restored.error().message;
  EXPECT_EQ((*target)->GetAll(kOriginals, "2026/01/01/a/original", 1 << 20).value(), "original bytes");
  std::ifstream ring(dir_ / "restored/keyring.json");
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(ring), {}), "{\"keys\":\"k\"}");
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ / "restored/imgpipe.db").c_str(), &db), SQLITE_OK);
  int value = 0;
  sqlite3_exec(db, "SELECT x FROM t", [](void* out, int, char** cells, char**) {
    *static_cast<int*>(out) = std::atoi(cells[0]);
    return 0;
  }, &value, nullptr);
  sqlite3_close(db);
  EXPECT_EQ(value, 42);
  EXPECT_EQ(RestoreBackup(dir_ / "backup", *verified, t, target->get()).error().kind, ErrorKind::kConflict);
}

TEST_F(BackupTest, AlteredOrMissingFilesAreDetected) {
  ASSERT_TRUE(CreateBackup(Options(), *blobs_).ok());
  const fs::path blob = dir_ / "backup/blobs/originals/2026/01/01/a/original";
  std::ofstream(blob, std::ios::trunc) << "original byteZ";
  auto verified = VerifyBackup(dir_ / "backup");
  ASSERT_FALSE(verified.ok());
  EXPECT_EQ(verified.error().kind, ErrorKind::kIntegrity);
  EXPECT_NE(verified.error().message.find(blob.string()), std::string::npos) << verified.error().message;
  fs::remove(blob);
  EXPECT_EQ(VerifyBackup(dir_ / "backup").error().kind, ErrorKind::kIntegrity);
  fs::remove(dir_ / "backup/manifest.json");
  EXPECT_EQ(VerifyBackup(dir_ / "backup").error().kind, ErrorKind::kIntegrity);
}

}  // namespace
}  // namespace imgpipe
