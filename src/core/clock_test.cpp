#include "core/clock.hpp"

#include <gtest/gtest.h>

namespace imgpipe {
namespace {

TEST(Rfc3339Test, FormatsUtcWithMilliseconds) {
  EXPECT_EQ(FormatRfc3339(FromUnixMicros(0)), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(FormatRfc3339(FromUnixMicros(1'764'111'342'123'456)), "2025-11-25T22:55:42.123Z");
}

TEST(Rfc3339Test, ParsesOffsetsFractionsAndDates) {
  TimePoint t;
  ASSERT_TRUE(ParseRfc3339("2025-11-25T22:55:42.123456Z", &t));
  EXPECT_EQ(ToUnixMicros(t), 1'764'111'342'123'456);
  ASSERT_TRUE(ParseRfc3339("2025-11-25T23:55:42+01:00", &t));
  EXPECT_EQ(ToUnixMicros(t), 1'764'111'342'000'000);
  ASSERT_TRUE(ParseRfc3339("2025-11-25", &t));
  EXPECT_EQ(ToUnixMicros(t), 1'764'028'800'000'000);
}

TEST(Rfc3339Test, RefusesTimesOutsideWhatATimePointHolds) {
  TimePoint t;
  EXPECT_TRUE(ParseRfc3339("2200-01-01T00:00:00Z", &t));
  EXPECT_TRUE(ParseRfc3339("1700-01-01T00:00:00Z", &t));
  EXPECT_FALSE(ParseRfc3339("0014-01-01T00:00:00Z", &t));
  EXPECT_FALSE(ParseRfc3339("9999-12-31T23:59:59Z", &t));
}

TEST(Rfc3339Test, RefusesMalformed) {
  TimePoint t;
  for (const char* bad : {"", "2025", "2025-13-01", "2025-11-25T22:55", "2025-11-25T22:55:42", "yesterday",
                          "2025-11-25T22:55:42Zjunk", "2025-11-25T22:55:42."}) {
    EXPECT_FALSE(ParseRfc3339(bad, &t)) << bad;
  }
}

TEST(FakeClockTest, MovesOnlyWhenTold) {
  FakeClock clock(FromUnixMicros(1000));
  EXPECT_EQ(ToUnixMicros(clock.Now()), 1000);
  clock.Advance(std::chrono::hours(24 * 7));
  EXPECT_EQ(ToUnixMicros(clock.Now()), 1000 + 7LL * 24 * 3600 * 1000000);
}

}  // namespace
}  // namespace imgpipe
