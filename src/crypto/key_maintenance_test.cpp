#include "crypto/key_maintenance.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "crypto/local/local_key_provider.hpp"
#include "storage/local/local_blob_store.hpp"

namespace imgpipe {
namespace {

namespace fs = std::filesystem;

class KeyMaintenanceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "imgpipe-rewrap-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    inner_ = std::move(LocalBlobStore::Open(dir_ + "/blobs").value());
    keys_ = std::move(LocalKeyProvider::Open(dir_ + "/keyring.json", clock_).value());
    store_ = std::make_unique<EncryptedBlobStore>(*inner_, *keys_, clock_);
  }
  void TearDown() override {
    store_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  uint32_t StoredVersion(std::string_view container, std::string_view key) {
    auto head = store_->ReadHeader(container, key);
    EXPECT_TRUE(head.ok()) << head.error().message;
    return head.ok() ? head->first.wrapped.version : 0;
  }
  std::string Content(size_t i) { return "object " + std::to_string(i) + std::string(i * 7919 % 200000, 'x'); }

  std::string dir_;
  SystemClock clock_;
  std::unique_ptr<LocalBlobStore> inner_;
  std::unique_ptr<LocalKeyProvider> keys_;
  std::unique_ptr<EncryptedBlobStore> store_;
  const std::vector<std::string> containers_{std::string(kOriginals), std::string(kRenditions),
                                             std::string(kScripts)};
};

TEST_F(KeyMaintenanceTest, RotateRewrapRetireKeepsEveryObjectIdentical) {
  for (size_t i = 0; i < 30; ++i) {
    ASSERT_TRUE(store_->Put(i % 2 ? kOriginals : kRenditions, "o/" + std::to_string(i), Content(i)).ok());
  }
  ASSERT_TRUE(inner_->Put(kScripts, "legacy/plain", "written before encryption").ok());
  auto before = ScanKeyUsage(*store_, containers_);
  ASSERT_TRUE(before.ok());
  EXPECT_EQ(before->objects, 31u);
  EXPECT_EQ(before->by_version[1], 30u);
  EXPECT_EQ(before->plaintext, 1u);

  ASSERT_EQ(keys_->Rotate()->version, 2u);
  const std::string stored_segment = [&] {
    auto raw = inner_->GetAll(kOriginals, "o/1", 1 << 20);
    return raw->substr(kHeaderBytes);
  }();

  // Writers keep going during the rewrap; what they write is on version 2 already.
  std::atomic<bool> stop{false};
  std::atomic<int> written{0};
  std::thread writer([&] {
    for (size_t i = 100; !stop; ++i) {
      ASSERT_TRUE(store_->Put(kOriginals, "new/" + std::to_string(i), Content(i)).ok());
      ++written;
    }
  });
  auto report = RewrapAll(*store_, containers_);
  stop = true;
  writer.join();
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_EQ(report->rewrapped, 30u);
  EXPECT_EQ(report->encrypted, 1u);
  EXPECT_EQ(report->unreadable, 0u);
  // Only the header changed: the sealed segments are byte for byte the same.
  EXPECT_EQ(inner_->GetAll(kOriginals, "o/1", 1 << 20)->substr(kHeaderBytes), stored_segment);

  auto after = ScanKeyUsage(*store_, containers_);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->by_version.count(1), 0u);
  EXPECT_EQ(after->plaintext, 0u);
  EXPECT_EQ(after->by_version[2], 31u + static_cast<uint64_t>(written));

  // A second pass is a no-op (that is what makes it resumable).
  auto again = RewrapAll(*store_, containers_);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->rewrapped + again->encrypted, 0u);

  ASSERT_TRUE(keys_->Retire(1).ok());
  store_->key_cache().Clear();
  for (size_t i = 0; i < 30; ++i) {
    auto got = store_->GetAll(i % 2 ? kOriginals : kRenditions, "o/" + std::to_string(i), 1 << 20);
    ASSERT_TRUE(got.ok()) << i << ": " << got.error().message;
    EXPECT_EQ(*got, Content(i));
    EXPECT_EQ(StoredVersion(i % 2 ? kOriginals : kRenditions, "o/" + std::to_string(i)), 2u);
  }
  EXPECT_EQ(*store_->GetAll(kScripts, "legacy/plain", 1000), "written before encryption");
}

TEST_F(KeyMaintenanceTest, DamagedObjectsAreReportedNotFatal) {
  ASSERT_TRUE(store_->Put(kOriginals, "d/ok", "fine").ok());
  ASSERT_TRUE(store_->Put(kOriginals, "d/bad", "will be damaged").ok());
  std::string raw = *inner_->GetAll(kOriginals, "d/bad", 1000);
  raw[70] ^= 1;  // the wrapped key
  ASSERT_TRUE(inner_->Put(kOriginals, "d/bad", raw).ok());
  ASSERT_TRUE(keys_->Rotate().ok());
  store_->key_cache().Clear();
  auto report = RewrapAll(*store_, containers_);
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_EQ(report->rewrapped, 1u);
  EXPECT_EQ(report->unreadable, 1u);
  ASSERT_EQ(report->examples.size(), 1u);
  EXPECT_NE(report->examples[0].find("d/bad"), std::string::npos);
}

}  // namespace
}  // namespace imgpipe
