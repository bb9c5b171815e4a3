#include "security/api_keys.hpp"

#include <gtest/gtest.h>

#include <filesystem>

#include "core/ids.hpp"
#include "warehouse/sqlite/sqlite_database.hpp"
#include "warehouse/sqlite/sqlite_metadata_store.hpp"

namespace imgpipe {
namespace {

class ApiKeysTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("imgpipe-keys-" + HexEncode(RandomBytes(6)));
    db_ = std::move(SqliteDatabase::Open(dir_ / "test.db").value());
    store_ = std::make_unique<SqliteMetadataStore>(*db_, clock_);
    ASSERT_TRUE(store_->Migrate().ok());
    keys_ = std::make_unique<ApiKeys>(*store_, clock_);
  }
  void TearDown() override {
    keys_.reset();
    store_.reset();
    db_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::filesystem::path dir_;
  FakeClock clock_{FromUnixMicros(1'764'111'342'000'000)};
  std::unique_ptr<SqliteDatabase> db_;
  std::unique_ptr<SqliteMetadataStore> store_;
  std::unique_ptr<ApiKeys> keys_;
};

TEST_F(ApiKeysTest, CreatedKeyAuthenticatesAndOnlyItsHashIsStored) {
  auto key = keys_->Create(Role::kUploader, "web app");
  ASSERT_TRUE(key.ok()) << key.error().message;
  EXPECT_EQ(key->secret.rfind("imgp_", 0), 0u);
  EXPECT_EQ(key->secret.size(), 5u + 43u);
  auto who = keys_->Authenticate("Bearer " + key->secret);
  ASSERT_TRUE(who.ok()) << who.error().message;
  EXPECT_EQ(who->id, key->record.id);
  EXPECT_EQ(who->role, Role::kUploader);
  // The warehouse holds the hash, never the secret.
  auto listed = keys_->List();
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].secret_hash, ApiKeys::HashSecret(key->secret));
  EXPECT_EQ((*listed)[0].secret_hash.find(key->secret.substr(5)), std::string::npos);
}

TEST_F(ApiKeysTest, MissingMalformedUnknownAndRevokedKeysAreUnauthenticated) {
  auto key = keys_->Create(Role::kReader, "");
  ASSERT_TRUE(key.ok());
  std::string other = "imgp_" + std::string(43, 'A');
  for (const std::string& header : {std::string(), std::string("Basic abc"), std::string("Bearer short"),
                                    "Bearer " + other, "Token " + key->secret}) {
    auto r = keys_->Authenticate(header);
    ASSERT_FALSE(r.ok()) << header;
    EXPECT_EQ(r.error().kind, ErrorKind::kUnauthenticated) << header;
    EXPECT_EQ(r.error().message.find(key->secret), std::string::npos) << "error must not echo the secret";
  }
  ASSERT_TRUE(keys_->Revoke(key->record.id).ok());
  auto r = keys_->Authenticate("Bearer " + key->secret);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kUnauthenticated);
  EXPECT_NE(r.error().message.find("revoked"), std::string::npos);
}

TEST_F(ApiKeysTest, BootstrapCreatesOneAdminOnlyOnAnEmptyWarehouse) {
  auto first = keys_->BootstrapAdmin();
  ASSERT_TRUE(first.ok());
  ASSERT_FALSE(first->empty());
  auto who = keys_->Authenticate("Bearer " + *first);
  ASSERT_TRUE(who.ok());
  EXPECT_EQ(who->role, Role::kAdmin);
  auto second = keys_->BootstrapAdmin();
  ASSERT_TRUE(second.ok());
  EXPECT_TRUE(second->empty());
}

TEST(RoleTest, AdminMayDoEverythingOthersOnlyWhatIsListed) {
  EXPECT_TRUE(RoleAllowed(Role::kAdmin, {}));
  EXPECT_TRUE(RoleAllowed(Role::kUploader, {Role::kUploader, Role::kReader}));
  EXPECT_FALSE(RoleAllowed(Role::kAnalyst, {Role::kUploader, Role::kReader}));
  EXPECT_FALSE(RoleAllowed(Role::kReader, {}));
}

}  // namespace
}  // namespace imgpipe
