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

TEST(S3Lifecycle, ComparisonAcceptsTheWantedRulesWhateverTheirIdsAndOrder) {
  using std::chrono::hours;
  auto wanted = S3RetentionLifecycleRules(hours(7 * 24), hours(36));
  EXPECT_TRUE(CompareS3Lifecycle(wanted, wanted).empty());
  // A server may name the rules after their prefixes and return them in another order.
  std::vector<S3LifecycleRule> renamed{{"", "", 0, 1, true}, {"renditions/", "renditions/", 3, 0, true},
                                       {"originals/", "originals/", 8, 0, true}};
  EXPECT_TRUE(CompareS3Lifecycle(renamed, wanted).empty());
}

TEST(S3Lifecycle, ComparisonNamesMissingAndLateRules) {
  using std::chrono::hours;
  auto wanted = S3RetentionLifecycleRules(hours(7 * 24), hours(36));
  auto none = CompareS3Lifecycle({}, wanted);
  ASSERT_EQ(none.size(), 3u);  // originals, renditions, incomplete uploads
  for (const auto& f : none) EXPECT_FALSE(f.expires_early) << f.message;
  EXPECT_NE(none[0].message.find("originals/"), std::string::npos) << none[0].message;
  EXPECT_NE(none[0].message.find("8 days"), std::string::npos) << none[0].message;
  // Retention was shortened after the rule was installed: the rule is late, not dangerous.
  std::vector<S3LifecycleRule> late{{"a", "originals/", 31, 0, true}, {"b", "renditions/", 3, 0, true},
                                    {"c", "", 0, 1, true}};
  auto findings = CompareS3Lifecycle(late, wanted);
  ASSERT_EQ(findings.size(), 1u);
  EXPECT_FALSE(findings[0].expires_early);
  EXPECT_NE(findings[0].message.find("31 days"), std::string::npos) << findings[0].message;
  // A disabled rule does nothing.
  late[0] = {"a", "originals/", 8, 0, false};
  ASSERT_EQ(CompareS3Lifecycle(late, wanted).size(), 1u);
}

TEST(S3Lifecycle, ComparisonFlagsRulesThatDeleteBeforeRetentionEnds) {
  using std::chrono::hours;
  auto wanted = S3RetentionLifecycleRules(hours(7 * 24), hours(36));
  // Retention was lengthened after the rule was installed.
  std::vector<S3LifecycleRule> early{{"a", "originals/", 2, 0, true}, {"b", "renditions/", 3, 0, true},
                                     {"c", "", 0, 1, true}};
  auto findings = CompareS3Lifecycle(early, wanted);
  ASSERT_EQ(findings.size(), 1u);
  EXPECT_TRUE(findings[0].expires_early);
  EXPECT_NE(findings[0].message.find("before their retention ends (retention wants 8 days)"), std::string::npos)
      << findings[0].message;
  // A rule over the whole bucket also reaches the scripts, which retention never deletes.
  std::vector<S3LifecycleRule> everything = wanted;
  everything.push_back({"someone-elses", "", 30, 0, true});
  findings = CompareS3Lifecycle(everything, wanted);
  ASSERT_EQ(findings.size(), 1u);
  EXPECT_TRUE(findings[0].expires_early);
  EXPECT_NE(findings[0].message.find("scripts/"), std::string::npos) << findings[0].message;
  // Zero retention keeps originals forever: any expiry of them is early.
  auto keep = S3RetentionLifecycleRules(std::chrono::seconds(0), hours(36));
  findings = CompareS3Lifecycle(wanted, keep);
  ASSERT_EQ(findings.size(), 1u);
  EXPECT_TRUE(findings[0].expires_early);
  EXPECT_NE(findings[0].message.find("originals/"), std::string::npos) << findings[0].message;
}

TEST(S3Lifecycle, RefusesNonsenseDays) {
  auto xml = ParseXml("<LifecycleConfiguration><Rule><ID>x</ID><Status>Enabled</Status><Expiration><Days>-3"
                      "</Days></Expiration></Rule></LifecycleConfiguration>");
  ASSERT_TRUE(xml.ok());
  EXPECT_FALSE(ParseS3Lifecycle(*xml).ok());
}

}  // namespace
}  // namespace imgpipe
