#include "retention/retention_sweeper.hpp"

#include <gtest/gtest.h>

#include <filesystem>

#include "core/blob_keys.hpp"
#include "core/ids.hpp"
#include "storage/local/local_blob_store.hpp"
#include "warehouse/sqlite/sqlite_database.hpp"
#include "warehouse/sqlite/sqlite_metadata_store.hpp"

namespace imgpipe {
namespace {

using std::chrono::hours;

class RetentionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("imgpipe-retention-" + HexEncode(RandomBytes(6)));
    db_ = std::move(SqliteDatabase::Open(dir_ / "test.db").value());
    store_ = std::make_unique<SqliteMetadataStore>(*db_, clock_);
    ASSERT_TRUE(store_->Migrate().ok());
    blobs_ = std::move(LocalBlobStore::Open((dir_ / "blobs").string()).value());
    sweeper_ = std::make_unique<RetentionSweeper>(RetentionPolicy{}, *blobs_, *store_, clock_, nullptr);
  }
  void TearDown() override {
    sweeper_.reset();
    blobs_.reset();
    store_.reset();
    db_.reset();
    std::filesystem::remove_all(dir_);
  }

  // An image received now, with its original and one rendition stored, expiring in 7 days.
  ImageRecord AddImage() {
    ImageRecord image;
    image.id = NewImageId(clock_.Now());
    image.sha256 = std::string(64, 'a');
    image.received_at = clock_.Now();
    image.format = "jpeg";
    image.original_key = OriginalBlobKey(image.id);
    image.expires_at = clock_.Now() + hours(24 * 7);
    EXPECT_TRUE(blobs_->Put(kOriginals, image.original_key, "original bytes").ok());
    EXPECT_TRUE(blobs_->Put(kRenditions, RenditionBlobKey(image.id, "thumb-256", "jpg"), "thumb").ok());
    EXPECT_TRUE(store_->InsertImage(image, std::nullopt).ok());
    return image;
  }

  std::filesystem::path dir_;
  FakeClock clock_{FromUnixMicros(1'764'111'342'000'000)};
  std::unique_ptr<SqliteDatabase> db_;
  std::unique_ptr<SqliteMetadataStore> store_;
  std::unique_ptr<LocalBlobStore> blobs_;
  std::unique_ptr<RetentionSweeper> sweeper_;
};

TEST_F(RetentionTest, NothingExpiresBeforeDaySeven) {
  ImageRecord image = AddImage();
  clock_.Advance(hours(24 * 7) - std::chrono::seconds(1));
  auto report = sweeper_->RunOnce(clock_.Now());
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_EQ(report->expired_images, 0);
  EXPECT_TRUE(blobs_->Stat(kOriginals, image.original_key).ok());
  EXPECT_EQ(store_->GetImage(image.id)->status, ImageStatus::kQueued);
}

TEST_F(RetentionTest, DaySevenDeletesBlobsAndKeepsTheRowAsExpired) {
  ImageRecord image = AddImage();
  ImageRecord young = [&] {
    clock_.Advance(hours(24 * 3));
    return AddImage();
  }();
  clock_.Set(image.received_at + hours(24 * 7) + std::chrono::seconds(1));
  auto report = sweeper_->RunOnce(clock_.Now());
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_EQ(report->expired_images, 1);
  EXPECT_EQ(report->deleted_blobs, 2);
  EXPECT_EQ(blobs_->Stat(kOriginals, image.original_key).error().kind, ErrorKind::kNotFound);
  EXPECT_EQ(blobs_->Stat(kRenditions, RenditionBlobKey(image.id, "thumb-256", "jpg")).error().kind,
            ErrorKind::kNotFound);
  auto row = store_->GetImage(image.id);
  ASSERT_TRUE(row.ok()) << "metadata must outlive the blobs";
  EXPECT_EQ(row->status, ImageStatus::kExpired);
  ASSERT_TRUE(row->expired_at.has_value());
  // The younger image is untouched.
  EXPECT_TRUE(blobs_->Stat(kOriginals, young.original_key).ok());
  EXPECT_EQ(store_->GetImage(young.id)->status, ImageStatus::kQueued);
  // A second sweep finds nothing more to do.
  auto again = sweeper_->RunOnce(clock_.Now());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->expired_images, 0);
}

TEST_F(RetentionTest, LeftoversOfWholeExpiredDaysAreRemoved) {
  // An original without a row: an upload that crashed between storing and committing.
  ImageId orphan = NewImageId(clock_.Now());
  ASSERT_TRUE(blobs_->Put(kOriginals, OriginalBlobKey(orphan), "orphan").ok());
  clock_.Advance(hours(24 * 8) + std::chrono::seconds(1));
  auto report = sweeper_->RunOnce(clock_.Now());
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_EQ(report->deleted_blobs, 1);
  EXPECT_EQ(blobs_->Stat(kOriginals, OriginalBlobKey(orphan)).error().kind, ErrorKind::kNotFound);
}

TEST_F(RetentionTest, DeleteImageBlobsRemovesOriginalAndRenditions) {
  ImageRecord image = AddImage();
  auto n = sweeper_->DeleteImageBlobs(image.id);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 2);
  auto left = blobs_->List(kRenditions, ImageBlobPrefix(image.id));
  ASSERT_TRUE(left.ok());
  EXPECT_TRUE(left->items.empty());
}

}  // namespace
}  // namespace imgpipe
