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

  //! The purge log, oldest first: "image_id what reason actor objects finished|unfinished" ("-" for no image).
  std::vector<std::string> Purges() {
    std::vector<std::string> rows;
    Status s = db_->Read([&](SqliteConnection& conn) -> Status {
      IMGPIPE_ASSIGN_OR_RETURN(auto stmt, conn.Prepare("SELECT coalesce(image_id, '-'), what, reason, actor, objects, "
                                                       "finished_at IS NOT NULL FROM purges ORDER BY id"));
      while (true) {
        IMGPIPE_ASSIGN_OR_RETURN(bool row, stmt.Step());
        if (!row) return Ok();
        rows.push_back(stmt.Text(0) + " " + stmt.Text(1) + " " + stmt.Text(2) + " " + stmt.Text(3) + " " +
                       std::to_string(stmt.Int(4)) + (stmt.Int(5) ? " finished" : " unfinished"));
      }
    });
    EXPECT_TRUE(s.ok()) << s.error().message;
    return rows;
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

TEST_F(RetentionTest, PurgeImageRemovesOriginalAndRenditionsAndRecordsIt) {
  ImageRecord image = AddImage();
  auto n = sweeper_->PurgeImage(image.id, "deleted", "k_admin");
  ASSERT_TRUE(n.ok()) << n.error().message;
  EXPECT_EQ(*n, 2);
  auto left = blobs_->List(kRenditions, ImageBlobPrefix(image.id));
  ASSERT_TRUE(left.ok());
  EXPECT_TRUE(left->items.empty());
  EXPECT_EQ(blobs_->Stat(kOriginals, image.original_key).error().kind, ErrorKind::kNotFound);
  EXPECT_EQ(Purges(), (std::vector<std::string>{image.id.value() + " image deleted k_admin 2 finished"}));
}

TEST_F(RetentionTest, HeldImagesOutliveRetentionUntilReleased) {
  ImageRecord held = AddImage();
  ImageRecord other = AddImage();
  ASSERT_TRUE(store_->SetLegalHold(held.id, "litigation 2026-17", "k_admin", clock_.Now()).ok());
  // Past retention, and past the day-folder pass that removes whole days of leftovers.
  clock_.Advance(hours(24 * 9));
  auto report = sweeper_->RunOnce(clock_.Now());
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_EQ(report->expired_images, 1);
  EXPECT_TRUE(blobs_->Stat(kOriginals, held.original_key).ok());
  EXPECT_TRUE(blobs_->Stat(kRenditions, RenditionBlobKey(held.id, "thumb-256", "jpg")).ok());
  EXPECT_EQ(blobs_->Stat(kOriginals, other.original_key).error().kind, ErrorKind::kNotFound);
  EXPECT_EQ(store_->GetImage(held.id)->status, ImageStatus::kQueued);

  ASSERT_TRUE(store_->ReleaseLegalHold(held.id, "k_admin", clock_.Now()).ok());
  report = sweeper_->RunOnce(clock_.Now());
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_EQ(report->expired_images, 1);
  EXPECT_EQ(blobs_->Stat(kOriginals, held.original_key).error().kind, ErrorKind::kNotFound);
  EXPECT_EQ(store_->GetImage(held.id)->status, ImageStatus::kExpired);
  EXPECT_EQ(Purges(), (std::vector<std::string>{other.id.value() + " image retention retention 2 finished",
                                                held.id.value() + " image retention retention 2 finished"}));
}

TEST_F(RetentionTest, AHoldAndAPurgeNeverBothWin) {
  ImageRecord image = AddImage();
  ASSERT_TRUE(store_->SetLegalHold(image.id, "audit", "k_admin", clock_.Now()).ok());
  auto refused = sweeper_->PurgeImage(image.id, "deleted", "k_admin");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().kind, ErrorKind::kConflict);
  EXPECT_NE(refused.error().message.find("legal hold"), std::string::npos) << refused.error().message;
  EXPECT_TRUE(blobs_->Stat(kOriginals, image.original_key).ok());
  EXPECT_TRUE(Purges().empty());

  // The other way round: a purge under way refuses a hold.
  ImageRecord other = AddImage();
  PurgeRecord purge;
  purge.image_id = other.id;
  purge.what = "image";
  purge.reason = "retention";
  purge.actor = "retention";
  purge.started_at = clock_.Now();
  ASSERT_TRUE(store_->BeginPurge(purge).ok());
  auto hold = store_->SetLegalHold(other.id, "too late", "k_admin", clock_.Now());
  ASSERT_FALSE(hold.ok());
  EXPECT_EQ(hold.error().kind, ErrorKind::kConflict);
}

TEST_F(RetentionTest, LeftoverPurgesAreRecordedOnlyWhenSomethingWent) {
  ImageId orphan = NewImageId(clock_.Now());
  ASSERT_TRUE(blobs_->Put(kOriginals, OriginalBlobKey(orphan), "orphan").ok());
  const std::string day = DayPrefix(clock_.Now());
  clock_.Advance(hours(24 * 8) + std::chrono::seconds(1));
  ASSERT_TRUE(sweeper_->RunOnce(clock_.Now()).ok());
  ASSERT_TRUE(sweeper_->RunOnce(clock_.Now()).ok());  // nothing left: nothing recorded
  EXPECT_EQ(Purges(),
            (std::vector<std::string>{"- originals/" + day + " leftovers past retention retention 1 finished"}));
}

TEST_F(RetentionTest, OnlyTheLeaseHolderSweepsAndTheLeasePassesOnWhenItRunsOutOrIsReleased) {
  using std::chrono::seconds;
  RetentionSweeper other(RetentionPolicy{}, *blobs_, *store_, clock_, nullptr);
  sweeper_->SetLease("first", seconds(30));
  other.SetLease("second", seconds(30));
  ImageRecord image = AddImage();
  clock_.Advance(hours(24 * 8));

  auto skipped = other.RunIfLeader(clock_.Now());
  ASSERT_TRUE(skipped.ok()) << skipped.error().message;
  ASSERT_TRUE(skipped->has_value()) << "nobody held the lease: the first to ask sweeps";
  EXPECT_EQ((*skipped)->expired_images, 1);
  auto refused = sweeper_->RunIfLeader(clock_.Now());
  ASSERT_TRUE(refused.ok()) << refused.error().message;
  EXPECT_FALSE(refused->has_value()) << "another process holds the lease";

  // The holder stops renewing (killed): once the lease runs out, the other takes over.
  clock_.Advance(seconds(29));
  EXPECT_FALSE(sweeper_->RunIfLeader(clock_.Now())->has_value());
  clock_.Advance(seconds(2));
  EXPECT_TRUE(sweeper_->RunIfLeader(clock_.Now())->has_value());
  EXPECT_FALSE(other.RunIfLeader(clock_.Now())->has_value());

  // A holder that stops cleanly releases it at once.
  sweeper_->Stop();
  EXPECT_TRUE(other.RunIfLeader(clock_.Now())->has_value());
  (void)image;
}

}  // namespace
}  // namespace imgpipe
