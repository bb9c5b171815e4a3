#include "security/rate_limiter.hpp"

#include <gtest/gtest.h>

namespace imgpipe {
namespace {

using std::chrono::milliseconds;

TEST(RateLimiterTest, ABurstThenTheRefillRate) {
  FakeClock clock(FromUnixMicros(1'700'000'000'000'000));
  RateLimiter limiter({.per_second = 2, .burst = 3}, clock);
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(limiter.Take("k1").has_value()) << i;
  auto wait = limiter.Take("k1");
  ASSERT_TRUE(wait.has_value());
  EXPECT_EQ(*wait, milliseconds(500));     // one token at 2 per second
  EXPECT_FALSE(limiter.Take("k2").has_value()) << "each caller has its own bucket";
  clock.Advance(milliseconds(499));
  EXPECT_TRUE(limiter.Take("k1").has_value());
  clock.Advance(milliseconds(2));
  EXPECT_FALSE(limiter.Take("k1").has_value());
  clock.Advance(std::chrono::hours(1));     // never more than the burst, however long the pause
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(limiter.Take("k1").has_value());
  EXPECT_TRUE(limiter.Take("k1").has_value());
}

TEST(RateLimiterTest, FullBucketsAreForgottenSoMemoryStaysBounded) {
  FakeClock clock(FromUnixMicros(1'700'000'000'000'000));
  RateLimiter limiter({.per_second = 10, .burst = 5, .max_callers = 100}, clock);
  for (int i = 0; i < 100; ++i) limiter.Take("addr-" + std::to_string(i));
  EXPECT_EQ(limiter.callers(), 100u);
  limiter.Take("busy");  // over the cap, but nobody has refilled yet: nothing to forget
  EXPECT_EQ(limiter.callers(), 101u);
  clock.Advance(std::chrono::seconds(1));
  limiter.Take("late");
  EXPECT_EQ(limiter.callers(), 1u) << "every bucket was full again, so only the new caller stays";
}

}  // namespace
}  // namespace imgpipe
