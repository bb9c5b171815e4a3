// The SQLCipher side of SqliteDatabase: what lands on disk, and every way a key can be wrong.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "warehouse/sqlite/sqlite_database.hpp"

namespace imgpipe {
namespace {

namespace fs = std::filesystem;

const std::string kKey = "x'" + std::string(64, 'a') + "'";
const std::string kOtherKey = "x'" + std::string(64, 'b') + "'";
constexpr std::string_view kSecret = "Canon EOS 5D Mark IV secret-marker";

class SqliteEncryptionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "imgpipe-sqlcipher-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    path_ = dir_ / "imgpipe.db";
  }
  void TearDown() override { fs::remove_all(dir_); }

  static SqliteDatabase::Options WithKey(const std::string& key) {
    SqliteDatabase::Options options;
    options.key = key;
    return options;
  }
  // A database at `path` keyed with `key`, holding one row with kSecret.
  void Create(const fs::path& path, const std::string& key) {
    auto db = SqliteDatabase::Open(path, WithKey(key));
    ASSERT_TRUE(db.ok()) << db.error().message;
    Status s = (*db)->Write([](SqliteConnection& c) -> Status {
      IMGPIPE_TRY(c.Exec("CREATE TABLE t(v TEXT); PRAGMA user_version = 7;"));
      IMGPIPE_ASSIGN_OR_RETURN(auto stmt, c.Prepare("INSERT INTO t VALUES (?1)"));
      stmt.BindText(1, kSecret);
      return stmt.Run();
    });
    ASSERT_TRUE(s.ok()) << s.error().message;
  }
  static std::string ReadSecret(SqliteDatabase& db) {
    std::string value;
    Status s = db.Read([&](SqliteConnection& c) -> Status {
      IMGPIPE_ASSIGN_OR_RETURN(auto stmt, c.Prepare("SELECT v FROM t"));
      IMGPIPE_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (row) value = stmt.Text(0);
      return Ok();
    });
    EXPECT_TRUE(s.ok()) << s.error().message;
    return value;
  }
  static std::string Bytes(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  fs::path dir_;
  fs::path path_;
};

TEST_F(SqliteEncryptionTest, NothingOnDiskIsReadableAndTheKeyOpensIt) {
  Create(path_, kKey);
  {
    auto db = SqliteDatabase::Open(path_, WithKey(kKey));
    ASSERT_TRUE(db.ok()) << db.error().message;
    EXPECT_EQ(ReadSecret(**db), kSecret);
    // While it is open the WAL holds the last commit: it is encrypted too.
    ASSERT_TRUE(fs::exists(dir_ / "imgpipe.db-wal"));
    for (const fs::path& file : {path_, dir_ / "imgpipe.db-wal"}) {
      const std::string raw = Bytes(file);
      EXPECT_EQ(raw.find("SQLite format 3"), std::string::npos) << file;
      EXPECT_EQ(raw.find(kSecret), std::string::npos) << file;
      EXPECT_EQ(raw.find("CREATE TABLE"), std::string::npos) << file;
    }
  }
  EXPECT_FALSE(SqliteDatabase::IsPlaintextDatabase(path_));
}

TEST_F(SqliteEncryptionTest, AWrongKeyOrNoKeyIsAClearError) {
  Create(path_, kKey);
  auto wrong = SqliteDatabase::Open(path_, WithKey(kOtherKey));
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().kind, ErrorKind::kIntegrity);
  EXPECT_NE(wrong.error().message.find("does not open with the warehouse key"), std::string::npos)
      << wrong.error().message;
  auto none = SqliteDatabase::Open(path_);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().kind, ErrorKind::kConflict);
  EXPECT_NE(none.error().message.find("is encrypted"), std::string::npos) << none.error().message;
}

TEST_F(SqliteEncryptionTest, APlaintextDatabaseIsRefusedThenEncryptedInPlace) {
  Create(path_, "");
  ASSERT_TRUE(SqliteDatabase::IsPlaintextDatabase(path_));
  auto refused = SqliteDatabase::Open(path_, WithKey(kKey));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().kind, ErrorKind::kConflict);
  EXPECT_NE(refused.error().message.find("imgpipe db encrypt"), std::string::npos) << refused.error().message;

  Status s = SqliteDatabase::EncryptInPlace(path_, kKey);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_FALSE(SqliteDatabase::IsPlaintextDatabase(path_));
  EXPECT_FALSE(fs::exists(dir_ / "imgpipe.db.encrypting"));
  EXPECT_EQ(Bytes(path_).find(kSecret), std::string::npos);
  auto db = SqliteDatabase::Open(path_, WithKey(kKey));
  ASSERT_TRUE(db.ok()) << db.error().message;
  EXPECT_EQ(ReadSecret(**db), kSecret);
  int64_t version = -1;
  ASSERT_TRUE((*db)->Read([&](SqliteConnection& c) -> Status {
                     IMGPIPE_ASSIGN_OR_RETURN(auto stmt, c.Prepare("PRAGMA user_version"));
                     IMGPIPE_ASSIGN_OR_RETURN(bool row, stmt.Step());
                     if (row) version = stmt.Int(0);
                     return Ok();
                   }).ok());
  EXPECT_EQ(version, 7) << "the migration level must survive the export";
  // Encrypting twice is refused, not a second layer.
  EXPECT_EQ(SqliteDatabase::EncryptInPlace(path_, kKey).error().kind, ErrorKind::kConflict);
}

TEST_F(SqliteEncryptionTest, BackupIsEncryptedWithTheSameKey) {
  Create(path_, kKey);
  auto db = SqliteDatabase::Open(path_, WithKey(kKey));
  ASSERT_TRUE(db.ok()) << db.error().message;
  const fs::path copy = dir_ / "copy.db";
  Status s = (*db)->BackupTo(copy);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ((*db)->BackupTo(copy).error().kind, ErrorKind::kConflict) << "an existing file is never overwritten";
  EXPECT_FALSE(SqliteDatabase::IsPlaintextDatabase(copy));
  EXPECT_EQ(Bytes(copy).find(kSecret), std::string::npos);
  auto opened = SqliteDatabase::Open(copy, WithKey(kKey));
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  EXPECT_EQ(ReadSecret(**opened), kSecret);
}

TEST_F(SqliteEncryptionTest, TheLinkedSqliteIsSqlcipherWithTheSqlWeUse) {
  auto db = SqliteDatabase::Open(path_, WithKey(kKey));
  ASSERT_TRUE(db.ok()) << db.error().message;
  std::string cipher, provider;
  int64_t window = 0;
  Status s = (*db)->Write([&](SqliteConnection& c) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto v, c.PrepareUncached("PRAGMA cipher_version"));
    IMGPIPE_ASSIGN_OR_RETURN(bool row, v.Step());
    if (row) cipher = v.Text(0);
    IMGPIPE_ASSIGN_OR_RETURN(auto p, c.PrepareUncached("PRAGMA cipher_provider"));
    IMGPIPE_ASSIGN_OR_RETURN(row, p.Step());
    if (row) provider = p.Text(0);
    // UPSERT and window functions: what Debian's SQLCipher 3.4 (SQLite 3.15) lacks.
    IMGPIPE_TRY(c.Exec("CREATE TABLE u(k INTEGER PRIMARY KEY, n INTEGER); INSERT INTO u VALUES (1, 1);"
                       "INSERT INTO u VALUES (1, 1) ON CONFLICT(k) DO UPDATE SET n = n + 1;"));
    IMGPIPE_ASSIGN_OR_RETURN(auto w, c.PrepareUncached("SELECT sum(n) OVER (ORDER BY k) FROM u"));
    IMGPIPE_ASSIGN_OR_RETURN(row, w.Step());
    if (row) window = w.Int(0);
    return Ok();
  });
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(cipher.rfind("4.", 0), 0u) << cipher;
  EXPECT_EQ(provider, "openssl");
  EXPECT_EQ(window, 2);
}

}  // namespace
}  // namespace imgpipe
