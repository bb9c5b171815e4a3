#include "api/list_params.hpp"

#include <gtest/gtest.h>

#include "core/ids.hpp"

namespace imgpipe {
namespace {

std::string ErrorOf(std::string_view query) {
  auto r = ParseImageListQuery(query);
  if (r.ok()) return "ok";
  EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
  return r.error().message;
}

TEST(ListParamsTest, ImageListFilterFromEveryParameter) {
  const std::string id = NewImageId(FromUnixMicros(1'764'111'342'000'000)).value();
  auto f = ParseImageListQuery("from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z&source=kafka&status=failed&limit=7"
                               "&cursor=" + id + "&unknown=1");
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_EQ(FormatRfc3339(*f->received_from), "2026-01-01T00:00:00.000Z");
  EXPECT_EQ(FormatRfc3339(*f->received_to), "2026-02-01T00:00:00.000Z");
  EXPECT_EQ(f->source, "kafka");
  EXPECT_EQ(f->status, ImageStatus::kFailed);
  EXPECT_EQ(f->limit, 7u);
  EXPECT_EQ(f->after_id, id);
  auto defaults = ParseImageListQuery("");
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->limit, 50u);
  EXPECT_FALSE(defaults->status);
}

TEST(ListParamsTest, HostileImageListParametersAreRefusedByName) {
  EXPECT_EQ(ErrorOf("from=yesterday"), "from: \"yesterday\" is not an RFC 3339 time");
  EXPECT_EQ(ErrorOf("to=2026-13-01T00:00:00Z"), "to: \"2026-13-01T00:00:00Z\" is not an RFC 3339 time");
  EXPECT_NE(ErrorOf("status=gone").find("status: \"gone\" is not one of"), std::string::npos);
  for (const char* limit : {"limit=0", "limit=501", "limit=-1", "limit=", "limit=5x", "limit=99999999999999999999999",
                            "limit=1e2"}) {
    EXPECT_EQ(ErrorOf(limit), "limit: must be an integer from 1 to 500") << limit;
  }
  EXPECT_EQ(ErrorOf("cursor=../../etc/passwd"), "cursor: not a cursor returned by this API");
  EXPECT_EQ(ErrorOf("limit=500"), "ok");
  EXPECT_EQ(ErrorOf(std::string_view("source=a\0b", 10)), "ok") << "bytes of a value are the caller's business";
}

TEST(ListParamsTest, AuditFilter) {
  auto f = ParseAuditQuery("since=2026-01-01T00:00:00Z&action=image.upload&actor=k_1&limit=10000");
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_EQ(f->action, "image.upload");
  EXPECT_EQ(f->actor, "k_1");
  EXPECT_EQ(f->limit, 10000u);
  EXPECT_EQ(ParseAuditQuery("")->limit, 100u);
  EXPECT_EQ(ParseAuditQuery("limit=10001").error().message, "limit must be 1 to 10000");
  EXPECT_EQ(ParseAuditQuery("since=now").error().message, "since: \"now\" is not an RFC 3339 time");
}

}  // namespace
}  // namespace imgpipe
