#include "core/ids.hpp"

#include <gtest/gtest.h>

#include <set>

namespace imgpipe {
namespace {

TEST(ImageIdTest, SortsByTimeAndRoundTripsTheTimestamp) {
  TimePoint t1 = FromUnixMicros(1'700'000'000'000'000);
  TimePoint t2 = t1 + std::chrono::milliseconds(1);
  ImageId a = NewImageId(t1);
  ImageId b = NewImageId(t2);
  EXPECT_TRUE(IsValidImageId(a.value()));
  EXPECT_LT(a.value(), b.value());
  EXPECT_EQ(ImageIdTime(a), t1);
  EXPECT_EQ(ImageIdTime(b), t2);
}

TEST(ImageIdTest, RandomPartDiffers) {
  TimePoint t = FromUnixMicros(1'700'000'000'000'000);
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) seen.insert(NewImageId(t).value());
  EXPECT_EQ(seen.size(), 1000u);
}

TEST(ImageIdTest, DeterministicIdsRepeatForTheSameSeed) {
  TimePoint t = FromUnixMicros(1'700'000'000'000'000);
  EXPECT_EQ(DeterministicImageId(t, "topic/0/42"), DeterministicImageId(t, "topic/0/42"));
  EXPECT_NE(DeterministicImageId(t, "topic/0/42"), DeterministicImageId(t, "topic/0/43"));
}

TEST(ImageIdTest, RejectsJunkAndTraversal) {
  EXPECT_FALSE(IsValidImageId(""));
  EXPECT_FALSE(IsValidImageId("../../etc/passwd"));
  EXPECT_FALSE(IsValidImageId("01HZZZZZZZZZZZZZZZZZZZZZZU"));  // U is not Crockford
  EXPECT_FALSE(IsValidImageId("81HZZZZZZZZZZZZZZZZZZZZZZZ"));  // overflows 128 bits
  EXPECT_FALSE(IsValidImageId("01hzzzzzzzzzzzzzzzzzzzzzzz"));  // lower case is not produced
}

TEST(EncodingTest, KnownVectors) {
  EXPECT_EQ(HexEncode("\x01\xab"), "01ab");
  EXPECT_EQ(Base64UrlEncode("f"), "Zg");
  EXPECT_EQ(Base64UrlEncode("fo"), "Zm8");
  EXPECT_EQ(Base64UrlEncode("foo"), "Zm9v");
  EXPECT_EQ(Base64UrlEncode("\xfb\xff"), "-_8");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

}  // namespace
}  // namespace imgpipe
