#include <gtest/gtest.h>

#include "storage/s3/s3_blob_store.hpp"
#include "storage/xml.hpp"

namespace imgpipe {
namespace {

TEST(S3ListObjects, ParsesAPageAndStripsTheContainer) {
  auto xml = ParseXml(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
      "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>b</Name>"
      "<Prefix>originals/day/</Prefix><KeyCount>2</KeyCount><MaxKeys>2</MaxKeys><IsTruncated>true</IsTruncated>"
      "<Contents><Key>originals/day/a</Key><LastModified>2026-11-26T01:37:43.000Z</LastModified>"
      "<ETag>&quot;e1&quot;</ETag><Size>7</Size></Contents>"
      "<Contents><Key>originals/day/b</Key><LastModified>2026-11-26T01:37:44Z</LastModified>"
      "<ETag>&quot;e2&quot;</ETag><Size>0</Size></Contents>"
      "<NextContinuationToken>1/abc==</NextContinuationToken></ListBucketResult>");
  ASSERT_TRUE(xml.ok()) << xml.error().message;
  auto page = ParseS3ListObjects(*xml, "originals");
  ASSERT_TRUE(page.ok()) << page.error().message;
  ASSERT_EQ(page->items.size(), 2u);
  EXPECT_EQ(page->items[0].key, "day/a");
  EXPECT_EQ(page->items[0].size, 7u);
  EXPECT_EQ(page->items[0].etag, "\"e1\"");
  EXPECT_EQ(page->continuation, "1/abc==");
}

TEST(S3ListObjects, RefusesAnswersItCannotTrust) {
  for (const char* body : {
           "<Error><Code>AccessDenied</Code></Error>",
           "<ListBucketResult><Contents><Key>renditions/x</Key><Size>1</Size>"
           "<LastModified>2026-11-26T01:37:43Z</LastModified></Contents></ListBucketResult>",
           "<ListBucketResult><Contents><Key>originals/x</Key><Size>-1</Size>"
           "<LastModified>2026-11-26T01:37:43Z</LastModified></Contents></ListBucketResult>",
           "<ListBucketResult><Contents><Key>originals/x</Key><Size>1</Size></Contents></ListBucketResult>",
           "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",
       }) {
    auto xml = ParseXml(body);
    ASSERT_TRUE(xml.ok()) << body;
    auto page = ParseS3ListObjects(*xml, "originals");
    ASSERT_FALSE(page.ok()) << body;
    EXPECT_EQ(page.error().kind, ErrorKind::kUnavailable);
  }
}

TEST(S3Lifecycle, RulesRoundTripThroughTheirXml) {
  std::vector<S3LifecycleRule> rules{{"imgpipe-originals", "originals/", 7, 0, true},
                                     {"imgpipe-incomplete-uploads", "", 0, 1, true}};
  auto xml = ParseXml(S3LifecycleXml(rules));
  ASSERT_TRUE(xml.ok()) << xml.error().message;
  auto back = ParseS3Lifecycle(*xml);
  ASSERT_TRUE(back.ok()) << back.error().message;
  ASSERT_EQ(back->size(), 2u);
  EXPECT_EQ((*back)[0].id, "imgpipe-originals");
  EXPECT_EQ((*back)[0].prefix, "originals/");
  EXPECT_EQ((*back)[0].expiration_days, 7);
  EXPECT_EQ((*back)[1].abort_incomplete_upload_days, 1);
  EXPECT_TRUE((*back)[1].enabled);
}

TEST(S3Lifecycle, RetentionRulesExpireADayAfterTheSweeper) {
  using std::chrono::hours;
  auto rules = S3RetentionLifecycleRules(hours(7 * 24), hours(36));
  ASSERT_EQ(rules.size(), 3u);
  EXPECT_EQ(rules[0].prefix, "originals/");
  EXPECT_EQ(rules[0].expiration_days, 8);
  EXPECT_EQ(rules[1].prefix, "renditions/");
  EXPECT_EQ(rules[1].expiration_days, 3);
  EXPECT_EQ(rules[2].abort_incomplete_upload_days, 1);
  EXPECT_EQ(rules[2].expiration_days, 0);
  // Zero retention keeps forever: no expiry rule, only the incomplete-upload cleanup.
  auto keep = S3RetentionLifecycleRules(std::chrono::seconds(0), std::chrono::seconds(0));
  ASSERT_EQ(keep.size(), 1u);
  EXPECT_EQ(keep[0].expiration_days, 0);
}

TEST(S3Lifecycle, RefusesNonsenseDays) {
  auto xml = ParseXml("<LifecycleConfiguration><Rule><ID>x</ID><Status>Enabled</Status><Expiration><Days>-3"
                      "</Days></Expiration></Rule></LifecycleConfiguration>");
  ASSERT_TRUE(xml.ok());
  EXPECT_FALSE(ParseS3Lifecycle(*xml).ok());
}

}  // namespace
}  // namespace imgpipe
