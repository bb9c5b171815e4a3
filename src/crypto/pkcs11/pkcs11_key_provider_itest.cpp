// Pkcs11KeyProvider against a real SoftHSM2 token (scripts/services/softhsm start; its variables in the environment).
// Without them the tests skip, except under scripts/test (IMGPIPE_REQUIRE_SOFTHSM=1), where they fail.
#include "crypto/pkcs11/pkcs11_key_provider.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>

#include "core/ids.hpp"
#include "crypto/encrypted_blob_store.hpp"
#include "storage/local/local_blob_store.hpp"

namespace imgpipe {
namespace {

namespace fs = std::filesystem;

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

class Pkcs11KeyProviderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.module = Env("IMGPIPE_TEST_PKCS11_MODULE");
    options_.token_label = Env("IMGPIPE_TEST_PKCS11_TOKEN");
    options_.pin = Env("IMGPIPE_TEST_PKCS11_PIN");
    token_dir_ = Env("IMGPIPE_TEST_PKCS11_TOKEN_DIR");
    if (options_.module.empty() || Env("SOFTHSM2_CONF").empty()) {
      if (!Env("IMGPIPE_REQUIRE_SOFTHSM").empty()) {
        FAIL() << "SoftHSM2 is required here: run scripts/services/softhsm start and export its softhsm.env";
      }
      GTEST_SKIP() << "no SoftHSM2 token (scripts/services/softhsm start)";
    }
    // Each test its own KEK family on the shared token.
    options_.key_label = "t-" + HexEncode(RandomBytes(6));
  }

  std::unique_ptr<Pkcs11KeyProvider> OpenOk() {
    auto p = Pkcs11KeyProvider::Open(options_, clock_);
    EXPECT_TRUE(p.ok()) << p.error().message;
    return p.ok() ? std::move(p).value() : nullptr;
  }

  Pkcs11KeyProvider::Options options_;
  std::string token_dir_;
  FakeClock clock_{TimePoint(std::chrono::hours(500000))};
};

TEST_F(Pkcs11KeyProviderTest, WrapsOnTheTokenBoundToTheAdditionalData) {
  auto p = OpenOk();
  ASSERT_TRUE(p);
  auto versions = p->Versions();
  ASSERT_TRUE(versions.ok()) << versions.error().message;
  ASSERT_EQ(versions->size(), 1u);  // created on first use
  DataKey key = DataKey::Random();
  auto wrapped = p->Wrap(key, "place-a");
  ASSERT_TRUE(wrapped.ok()) << wrapped.error().message;
  EXPECT_EQ(wrapped->key_id, options_.key_label);
  EXPECT_EQ(wrapped->version, 1u);
  EXPECT_EQ(wrapped->bytes.size(), 60u);
  auto back = p->Unwrap(*wrapped, "place-a");
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_TRUE(std::equal(key.data(), key.data() + key.size(), back->data()));
  auto elsewhere = p->Unwrap(*wrapped, "place-b");
  ASSERT_FALSE(elsewhere.ok());
  EXPECT_EQ(elsewhere.error().kind, ErrorKind::kIntegrity) << elsewhere.error().message;
  WrappedKey flipped = *wrapped;
  flipped.bytes[20] ^= 1;
  EXPECT_EQ(p->Unwrap(flipped, "place-a").error().kind, ErrorKind::kIntegrity);
}

TEST_F(Pkcs11KeyProviderTest, WrongPinOrTokenIsUnavailable) {
  auto bad_pin = options_;
  bad_pin.pin = "not-the-pin";
  auto p = Pkcs11KeyProvider::Open(bad_pin, clock_);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().kind, ErrorKind::kUnavailable);
  EXPECT_NE(p.error().message.find("PIN"), std::string::npos) << p.error().message;
  auto bad_token = options_;
  bad_token.token_label = "no-such-token";
  EXPECT_EQ(Pkcs11KeyProvider::Open(bad_token, clock_).error().kind, ErrorKind::kUnavailable);
  auto bad_module = options_;
  bad_module.module = "/nonexistent/libpkcs11.so";
  EXPECT_EQ(Pkcs11KeyProvider::Open(bad_module, clock_).error().kind, ErrorKind::kUnavailable);
}

TEST_F(Pkcs11KeyProviderTest, RotateAndRetire) {
  auto a = OpenOk();
  auto b = OpenOk();  // another process on the same token
  ASSERT_TRUE(a && b);
  DataKey key = DataKey::Random();
  auto v1 = a->Wrap(key, "x");
  ASSERT_TRUE(v1.ok());
  auto rotated = a->Rotate();
  ASSERT_TRUE(rotated.ok()) << rotated.error().message;
  EXPECT_EQ(rotated->version, 2u);
  auto v2 = a->Wrap(key, "x");
  ASSERT_TRUE(v2.ok());
  EXPECT_EQ(v2->version, 2u);
  ASSERT_TRUE(b->Unwrap(*v2, "x").ok());  // unknown version: b looks at once
  clock_.Advance(std::chrono::seconds(6));
  EXPECT_EQ(b->Wrap(key, "x")->version, 2u);
  EXPECT_EQ(a->Retire(2).error().kind, ErrorKind::kConflict);
  ASSERT_TRUE(a->Retire(1).ok());
  EXPECT_FALSE(a->Unwrap(*v1, "x").ok());
  auto versions = b->Versions();
  ASSERT_TRUE(versions.ok());
  ASSERT_EQ(versions->size(), 1u);
  EXPECT_EQ(versions->front().version, 2u);
}

TEST_F(Pkcs11KeyProviderTest, TokenTakenAwayFailsClosedAndComesBack) {
  ASSERT_FALSE(token_dir_.empty());
  auto p = OpenOk();
  ASSERT_TRUE(p);
  auto root = fs::path(token_dir_).parent_path();
  auto blobs = LocalBlobStore::Open((root / ("blobs-" + options_.key_label)).string());
  ASSERT_TRUE(blobs.ok());
  EncryptedBlobStore store(**blobs, *p, clock_);
  ASSERT_TRUE(store.Put(kOriginals, "hsm/before", "written while the token was there").ok());

  std::string away = token_dir_ + ".away";
  fs::rename(token_dir_, away);
  struct Restore {
    std::string from, to;
    ~Restore() {
      std::error_code ec;
      if (fs::exists(from)) fs::rename(from, to, ec);
    }
  } restore{away, token_dir_};

  Status ping = store.Ping();
  ASSERT_FALSE(ping.ok());
  EXPECT_EQ(ping.error().kind, ErrorKind::kUnavailable) << ping.error().message;
  auto put = store.Put(kOriginals, "hsm/during", "must not be written");
  ASSERT_FALSE(put.ok());
  EXPECT_EQ(put.error().kind, ErrorKind::kUnavailable) << put.error().message;
  EXPECT_FALSE((*blobs)->Stat(kOriginals, "hsm/during").ok());

  fs::rename(away, token_dir_);
  EXPECT_TRUE(store.Ping().ok());
  ASSERT_TRUE(store.Put(kOriginals, "hsm/after", "back").ok());
  store.key_cache().Clear();
  EXPECT_EQ(*store.GetAll(kOriginals, "hsm/before", 1000), "written while the token was there");
  EXPECT_EQ(*store.GetAll(kOriginals, "hsm/after", 1000), "back");
  std::error_code ec;
  fs::remove_all(root / ("blobs-" + options_.key_label), ec);
}

}  // namespace
}  // namespace imgpipe
