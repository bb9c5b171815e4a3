#include "core/cidr.hpp"

#include <charconv>
#include <vector>

namespace imgpipe {

namespace ip = boost::asio::ip;

namespace {

ip::address Unmapped(const ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped()) return ip::make_address_v4(ip::v4_mapped, a.to_v6());
  return a;
}

//! The address's bytes in network order: 4 for IPv4, 16 for IPv6.
std::vector<unsigned char> Bytes(const ip::address& a) {
  if (a.is_v4()) {
    const auto b = a.to_v4().to_bytes();
    return {b.begin(), b.end()};
  }
  const auto b = a.to_v6().to_bytes();
  return {b.begin(), b.end()};
}

}  // namespace

Result<Cidr> ParseCidr(std::string_view text) {
  const size_t slash = text.find('/');
  boost::system::error_code ec;
  const std::string host(text.substr(0, slash));
  ip::address address = ip::make_address(host, ec);
  if (ec) {
    return MakeError(ErrorKind::kInvalidArgument, "\"" + std::string(text) + "\" is not an address or address block " +
                                                      "(like 10.0.0.0/8, 192.168.1.7 or fd00::/8)");
  }
  address = Unmapped(address);
  const int bits = address.is_v4() ? 32 : 128;
  int prefix = bits;
  if (slash != std::string_view::npos) {
    std::string_view p = text.substr(slash + 1);
    auto [end, err] = std::from_chars(p.data(), p.data() + p.size(), prefix);
    if (p.empty() || err != std::errc() || end != p.data() + p.size() || prefix < 0 || prefix > bits) {
      return MakeError(ErrorKind::kInvalidArgument, "\"" + std::string(text) + "\": the prefix must be 0 to " +
                                                        std::to_string(bits));
    }
  }
  return Cidr{address, prefix};
}

bool CidrContains(const Cidr& block, const ip::address& candidate) {
  const ip::address a = Unmapped(candidate);
  if (a.is_v4() != block.network.is_v4()) return false;
  const std::vector<unsigned char> x = Bytes(a), n = Bytes(block.network);
  int left = block.prefix;
  for (size_t i = 0; i < x.size() && left > 0; ++i, left -= 8) {
    const unsigned mask = left >= 8 ? 0xffu : (0xffu << (8 - left)) & 0xffu;
    if ((x[i] & mask) != (n[i] & mask)) return false;
  }
  return true;
}

bool AnyCidrContains(const std::vector<Cidr>& blocks, const ip::address& address) {
  for (const Cidr& b : blocks) {
    if (CidrContains(b, address)) return true;
  }
  return false;
}

}  // namespace imgpipe
