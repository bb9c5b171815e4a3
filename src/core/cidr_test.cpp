#include "core/cidr.hpp"

#include <gtest/gtest.h>

namespace imgpipe {
namespace {

namespace ip = boost::asio::ip;

bool In(const char* block, const char* address) {
  auto b = ParseCidr(block);
  EXPECT_TRUE(b.ok()) << block;
  return b.ok() && CidrContains(*b, ip::make_address(address));
}

TEST(CidrTest, BlocksAndSingleAddresses) {
  EXPECT_TRUE(In("10.0.0.0/8", "10.200.3.4"));
  EXPECT_FALSE(In("10.0.0.0/8", "11.0.0.1"));
  EXPECT_TRUE(In("192.168.1.7", "192.168.1.7"));
  EXPECT_FALSE(In("192.168.1.7", "192.168.1.8"));
  EXPECT_TRUE(In("172.16.0.0/12", "172.31.255.255"));
  EXPECT_FALSE(In("172.16.0.0/12", "172.32.0.0"));
  EXPECT_TRUE(In("0.0.0.0/0", "8.8.8.8"));
  EXPECT_TRUE(In("fd00::/8", "fd12::1"));
  EXPECT_FALSE(In("fd00::/8", "fe80::1"));
  EXPECT_TRUE(In("127.0.0.1", "::ffff:127.0.0.1")) << "IPv4-mapped IPv6 is the IPv4 address";
  EXPECT_FALSE(In("::1", "127.0.0.1"));
}

TEST(CidrTest, BadTextIsRefusedWithTheReason) {
  for (const char* bad : {"", "10.0.0.0/33", "10.0.0.0/", "10.0.0/8", "::1/129", "example.com", "10.0.0.0/-1",
                          "10.0.0.0/8x", "1.2.3.4/8/8"}) {
    auto r = ParseCidr(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
    }
  }
}

}  // namespace
}  // namespace imgpipe
