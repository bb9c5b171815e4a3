#include "crypto/local/local_key_provider.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace imgpipe {
namespace {

namespace fs = std::filesystem;

class LocalKeyProviderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "imgpipe-keyring-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/sub/keyring.json";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::unique_ptr<LocalKeyProvider> OpenOk() {
    auto p = LocalKeyProvider::Open(path_, clock_);
    EXPECT_TRUE(p.ok()) << p.error().message;
    return p.ok() ? std::move(p).value() : nullptr;
  }

  std::string dir_;
  std::string path_;
  FakeClock clock_{TimePoint(std::chrono::hours(500000))};
};

TEST_F(LocalKeyProviderTest, CreatesAPrivateKeyringOnFirstOpen) {
  auto p = OpenOk();
  ASSERT_TRUE(p);
  struct stat st {};
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(p->key_id().rfind("local-", 0), 0u);
  auto versions = p->Versions();
  ASSERT_TRUE(versions.ok());
  ASSERT_EQ(versions->size(), 1u);
  EXPECT_EQ((*versions)[0].version, 1u);
  EXPECT_TRUE((*versions)[0].current);
  // Opened again: the same keyring, not a new one.
  auto again = OpenOk();
  EXPECT_EQ(again->key_id(), p->key_id());
}

TEST_F(LocalKeyProviderTest, WrapsAndUnwrapsBoundToTheAdditionalData) {
  auto p = OpenOk();
  DataKey key = DataKey::Random();
  auto wrapped = p->Wrap(key, "place-a");
  ASSERT_TRUE(wrapped.ok());
  EXPECT_EQ(wrapped->key_id, p->key_id());
  EXPECT_EQ(wrapped->version, 1u);
  EXPECT_EQ(wrapped->bytes.size(), 60u);
  auto back = p->Unwrap(*wrapped, "place-a");
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(std::equal(key.data(), key.data() + key.size(), back->data()));
  auto elsewhere = p->Unwrap(*wrapped, "place-b");
  ASSERT_FALSE(elsewhere.ok());
  EXPECT_EQ(elsewhere.error().kind, ErrorKind::kIntegrity);
  WrappedKey foreign = *wrapped;
  foreign.key_id = "local-ffffffffffffffff";
  EXPECT_EQ(p->Unwrap(foreign, "place-a").error().kind, ErrorKind::kNotFound);
}

TEST_F(LocalKeyProviderTest, RotateAddsAVersionOthersSeeAndRetireDestroysOldOnes) {
  auto a = OpenOk();
  auto b = OpenOk();  // another process on the same keyring (e.g. serve while `imgpipe kek rotate` runs)
  DataKey key = DataKey::Random();
  auto v1 = a->Wrap(key, "x");
  ASSERT_TRUE(v1.ok());
  auto rotated = a->Rotate();
  ASSERT_TRUE(rotated.ok());
  EXPECT_EQ(rotated->version, 2u);
  auto v2 = a->Wrap(key, "x");
  ASSERT_TRUE(v2.ok());
  EXPECT_EQ(v2->version, 2u);
  // b has not looked at the file yet, but a version it does not know makes it look at once.
  ASSERT_TRUE(b->Unwrap(*v2, "x").ok());
  // and after its refresh interval it wraps with the new version too
  clock_.Advance(std::chrono::seconds(2));
  EXPECT_EQ(b->Wrap(key, "x")->version, 2u);

  auto refused = a->Retire(2);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().kind, ErrorKind::kConflict);
  ASSERT_TRUE(a->Retire(1).ok());
  auto gone = a->Unwrap(*v1, "x");
  ASSERT_FALSE(gone.ok());
  EXPECT_NE(gone.error().message.find("retired"), std::string::npos) << gone.error().message;
  clock_.Advance(std::chrono::seconds(2));
  EXPECT_FALSE(b->Unwrap(*v1, "x").ok());
  // Numbers are never reused after a retirement.
  EXPECT_EQ(a->Rotate()->version, 3u);
  auto versions = b->Versions();
  ASSERT_TRUE(versions.ok());
  ASSERT_EQ(versions->size(), 2u);
  EXPECT_EQ(versions->back().version, 3u);
  EXPECT_TRUE(versions->back().current);
}

TEST_F(LocalKeyProviderTest, AMissingKeyringFailsClosed) {
  auto p = OpenOk();
  fs::remove(path_);
  clock_.Advance(std::chrono::seconds(2));
  auto wrapped = p->Wrap(DataKey::Random(), "x");
  ASSERT_FALSE(wrapped.ok());
  EXPECT_EQ(wrapped.error().kind, ErrorKind::kUnavailable);
  EXPECT_FALSE(p->Ping().ok());
}

TEST_F(LocalKeyProviderTest, RefusesKeyringsOthersCanReadOrThatAreNotKeyrings) {
  ASSERT_TRUE(OpenOk());
  ASSERT_EQ(::chmod(path_.c_str(), 0644), 0);
  auto open = LocalKeyProvider::Open(path_, clock_);
  ASSERT_FALSE(open.ok());
  EXPECT_EQ(open.error().kind, ErrorKind::kPermissionDenied);
  ASSERT_EQ(::chmod(path_.c_str(), 0660), 0);
  EXPECT_FALSE(LocalKeyProvider::Open(path_, clock_).ok()) << "writable by the group";
  // Readable by this process's own group: how Kubernetes mounts a Secret for a pod's fsGroup.
  ASSERT_EQ(::chown(path_.c_str(), static_cast<uid_t>(-1), ::getegid()), 0);
  ASSERT_EQ(::chmod(path_.c_str(), 0440), 0);
  auto group_read = LocalKeyProvider::Open(path_, clock_);
  EXPECT_TRUE(group_read.ok()) << group_read.error().message;
  ASSERT_EQ(::chmod(path_.c_str(), 0600), 0);
  for (const char* junk : {"", "not json", "[]", "{\"format\":2}", "{\"format\":1,\"key_id\":\"a b\",\"versions\":[]}",
                           "{\"format\":1,\"key_id\":\"k\",\"versions\":[]}",
                           "{\"format\":1,\"key_id\":\"k\",\"versions\":[{\"version\":1,\"created\":\"2026-01-01T00:00:00Z\",\"key\":\"00\"}]}"}) {
    std::ofstream(path_, std::ios::trunc) << junk;
    auto r = LocalKeyProvider::Open(path_, clock_);
    ASSERT_FALSE(r.ok()) << junk;
    EXPECT_EQ(r.error().kind, ErrorKind::kIntegrity) << junk;
  }
}

TEST_F(LocalKeyProviderTest, KeyringTextRoundTrips) {
  LocalKeyring ring;
  ring.key_id = "local-0123456789abcdef";
  ring.versions[2] = {DataKey::Random(), clock_.Now()};
  ring.versions[4] = {DataKey::Random(), clock_.Now()};
  ring.retired = {1, 3};
  auto back = ParseKeyring(SerializeKeyring(ring));
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->key_id, ring.key_id);
  EXPECT_EQ(back->retired, ring.retired);
  ASSERT_EQ(back->versions.size(), 2u);
  EXPECT_TRUE(std::equal(ring.versions[4].kek.data(), ring.versions[4].kek.data() + kDataKeyBytes,
                         back->versions[4].kek.data()));
}

}  // namespace
}  // namespace imgpipe
