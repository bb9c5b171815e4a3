#pragma once

#include <boost/asio/ip/address.hpp>

#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"

namespace imgpipe {

//! An address block: "10.0.0.0/8", "192.168.1.7" (a single address), "::1/128", "fd00::/8".
struct Cidr {
  boost::asio::ip::address network;
  int prefix = 0;  //!< leading bits that must match: 0..32 (IPv4) or 0..128 (IPv6)
};

//! kInvalidArgument naming the problem for anything that is not an address with an optional /prefix in range.
Result<Cidr> ParseCidr(std::string_view text);
//! Whether `address` is inside `block`; an IPv4 address given as IPv4-mapped IPv6 (::ffff:a.b.c.d) counts as IPv4.
bool CidrContains(const Cidr& block, const boost::asio::ip::address& address);
bool AnyCidrContains(const std::vector<Cidr>& blocks, const boost::asio::ip::address& address);

}  // namespace imgpipe
