#include "http/range.hpp"

#include <gtest/gtest.h>

namespace imgpipe {
namespace {

std::optional<ByteRange> Ok(std::string_view h, uint64_t size) {
  auto r = ParseRangeHeader(h, size);
  EXPECT_TRUE(r.ok()) << h;
  return r.ok() ? *r : std::nullopt;
}

TEST(RangeTest, ParsesTheThreeForms) {
  auto r = Ok("bytes=0-99", 1000);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->offset, 0u);
  EXPECT_EQ(r->length, 100u);
  r = Ok("bytes=900-", 1000);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->offset, 900u);
  EXPECT_EQ(r->length, 100u);
  r = Ok("bytes=-10", 1000);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->offset, 990u);
  EXPECT_EQ(r->length, 10u);
}

TEST(RangeTest, ClampsTheEndAndTheSuffix) {
  auto r = Ok("bytes=990-5000", 1000);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->length, 10u);
  r = Ok("bytes=-5000", 1000);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->offset, 0u);
  EXPECT_EQ(r->length, 1000u);
}

TEST(RangeTest, UnsatisfiableRanges) {
  for (auto h : {"bytes=1000-", "bytes=1000-2000", "bytes=-0"}) {
    auto r = ParseRangeHeader(h, 1000);
    ASSERT_FALSE(r.ok()) << h;
    EXPECT_EQ(r.error().kind, ErrorKind::kRangeNotSatisfiable);
  }
  EXPECT_FALSE(ParseRangeHeader("bytes=0-", 0).ok());
}

TEST(RangeTest, IgnoresWhatItDoesNotServe) {
  for (auto h : {"", "items=0-1", "bytes=0-1,5-6", "bytes=abc", "bytes=5-1", "bytes=-", "bytes=99999999999999999999-"}) {
    EXPECT_FALSE(Ok(h, 1000).has_value()) << h;
  }
}

}  // namespace
}  // namespace imgpipe
