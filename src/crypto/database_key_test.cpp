#include "crypto/database_key.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "crypto/local/local_key_provider.hpp"

namespace imgpipe {
namespace {

namespace fs = std::filesystem;

class DatabaseKeyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "imgpipe-dbkey-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    sidecar_ = DatabaseKeyPath(dir_ + "/imgpipe.db");
    keys_ = Keyring("keyring.json");
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::unique_ptr<LocalKeyProvider> Keyring(const std::string& name) {
    auto p = LocalKeyProvider::Open(dir_ + "/" + name, clock_);
    EXPECT_TRUE(p.ok()) << p.error().message;
    return p.ok() ? std::move(p).value() : nullptr;
  }
  static bool Same(const DataKey& a, const DataKey& b) { return std::memcmp(a.data(), b.data(), a.size()) == 0; }

  std::string dir_;
  std::string sidecar_;
  FakeClock clock_{TimePoint(std::chrono::hours(500000))};
  std::unique_ptr<LocalKeyProvider> keys_;
};

TEST_F(DatabaseKeyTest, CreatedOnceThenTheSameKeyOpens) {
  EXPECT_EQ(OpenDatabaseKey(*keys_, sidecar_, /*create=*/false).error().kind, ErrorKind::kNotFound);
  auto created = OpenDatabaseKey(*keys_, sidecar_, /*create=*/true);
  ASSERT_TRUE(created.ok()) << created.error().message;
  struct stat st {};
  ASSERT_EQ(::stat(sidecar_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto again = OpenDatabaseKey(*keys_, sidecar_, /*create=*/true);
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_TRUE(Same(*created, *again)) << "an existing key file must never be replaced";
  // The key itself is not in the file, only its wrapping.
  std::ifstream in(sidecar_);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  const std::string hex = SqlcipherRawKey(*created).substr(2, 64);
  EXPECT_EQ(text.find(hex), std::string::npos);
  EXPECT_EQ(SqlcipherRawKey(*created).size(), 67u);
}

TEST_F(DatabaseKeyTest, RewrapMovesToTheNewVersionAndKeepsTheKey) {
  auto key = OpenDatabaseKey(*keys_, sidecar_, true);
  ASSERT_TRUE(key.ok());
  EXPECT_EQ(DatabaseKeyVersion(sidecar_).value(), 1u);
  EXPECT_FALSE(RewrapDatabaseKey(*keys_, sidecar_).value()) << "already current";
  ASSERT_TRUE(keys_->Rotate().ok());
  auto changed = RewrapDatabaseKey(*keys_, sidecar_);
  ASSERT_TRUE(changed.ok()) << changed.error().message;
  EXPECT_TRUE(*changed);
  EXPECT_EQ(DatabaseKeyVersion(sidecar_).value(), 2u);
  ASSERT_TRUE(keys_->Retire(1).ok());
  auto after = OpenDatabaseKey(*keys_, sidecar_, false);
  ASSERT_TRUE(after.ok()) << after.error().message;
  EXPECT_TRUE(Same(*key, *after));
  EXPECT_FALSE(RewrapDatabaseKey(*keys_, dir_ + "/none.key").value()) << "no key file: nothing to rewrap";
}

TEST_F(DatabaseKeyTest, AnotherKeyringOrADamagedFileIsAnIntegrityError) {
  ASSERT_TRUE(OpenDatabaseKey(*keys_, sidecar_, true).ok());
  auto other = Keyring("other.json");
  auto wrong = OpenDatabaseKey(*other, sidecar_, false);
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().kind, ErrorKind::kIntegrity);
  EXPECT_NE(wrong.error().message.find("does not open under"), std::string::npos) << wrong.error().message;

  std::ifstream in(sidecar_);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
           {"\"version\":1", "\"version\":0"}, {"imgpipe-database-key/1", "imgpipe-database-key/9"},
           {"\"algorithm\":1", "\"algorithm\":2"}, {"{", "["}}) {
    std::string bad = text;
    bad.replace(bad.find(from), from.size(), to);
    std::ofstream(sidecar_, std::ios::trunc) << bad;
    auto r = OpenDatabaseKey(*keys_, sidecar_, true);
    ASSERT_FALSE(r.ok()) << from;
    EXPECT_EQ(r.error().kind, ErrorKind::kIntegrity) << from;
  }
  // A flipped byte of the wrapped key: the unwrap's tag fails.
  std::string bad = text;
  size_t at = bad.find("\"wrapped\":\"") + 11;
  bad[at] = bad[at] == '0' ? '1' : '0';
  std::ofstream(sidecar_, std::ios::trunc) << bad;
  EXPECT_EQ(OpenDatabaseKey(*keys_, sidecar_, true).error().kind, ErrorKind::kIntegrity);
}

}  // namespace
}  // namespace imgpipe
