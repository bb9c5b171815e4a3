#include "core/ids.hpp"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <array>
#include <stdexcept>

namespace imgpipe {
namespace {

constexpr std::string_view kCrockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

int CrockfordValue(char c) {
  for (size_t i = 0; i < kCrockford.size(); ++i) {
    if (kCrockford[i] == c) return static_cast<int>(i);
  }
  return -1;
}

// Encodes 16 bytes (128 bits) as 26 base32 characters, most significant first; the top 2 bits of the first
// character are always zero.
std::string EncodeUlid(const std::array<uint8_t, 16>& b) {
  unsigned __int128 v = 0;
  for (uint8_t x : b) v = (v << 8) | x;
  std::string out(26, '0');
  for (int i = 25; i >= 0; --i) {
    out[i] = kCrockford[static_cast<size_t>(v & 31)];
    v >>= 5;
  }
  return out;
}

ImageId FromParts(TimePoint time, const uint8_t* rand10) {
  std::array<uint8_t, 16> b{};
  uint64_t ms = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(time.time_since_epoch()).count());
  for (int i = 0; i < 6; ++i) b[i] = static_cast<uint8_t>(ms >> (8 * (5 - i)));
  for (int i = 0; i < 10; ++i) b[6 + i] = rand10[i];
  return ImageId(EncodeUlid(b));
}

}  // namespace

std::string RandomBytes(size_t n) {
  std::string out(n, '\0');
  if (n > 0 && RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) {
    throw std::runtime_error("OpenSSL RAND_bytes failed: the system random generator is unavailable");
  }
  return out;
}

ImageId NewImageId(TimePoint now) {
  std::string r = RandomBytes(10);
  return FromParts(now, reinterpret_cast<const uint8_t*>(r.data()));
}

ImageId DeterministicImageId(TimePoint time, std::string_view seed) {
  std::string h = Sha256(seed);
  return FromParts(time, reinterpret_cast<const uint8_t*>(h.data()));
}

bool IsValidImageId(std::string_view text) {
  if (text.size() != 26) return false;
  if (CrockfordValue(text[0]) > 7) return false;  // would overflow 128 bits
  for (char c : text) {
    if (CrockfordValue(c) < 0) return false;
  }
  return true;
}

TimePoint ImageIdTime(const ImageId& id) {
  uint64_t ms = 0;
  // The first 10 characters carry 50 bits, the top 2 of which are zero: the 48-bit timestamp.
  for (int i = 0; i < 10; ++i) ms = (ms << 5) | static_cast<uint64_t>(CrockfordValue(id.value()[i]));
  return TimePoint(std::chrono::milliseconds(ms));
}

std::string NewRequestId() { return HexEncode(RandomBytes(8)); }

std::string HexEncode(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

std::string Base64UrlEncode(std::string_view bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  size_t i = 0;
  auto at = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(bytes[k])); };
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t v = (at(i) << 16) | (at(i + 1) << 8) | at(i + 2);
    for (int s = 18; s >= 0; s -= 6) out.push_back(kAlphabet[(v >> s) & 63]);
  }
  if (bytes.size() - i == 1) {
    uint32_t v = at(i) << 16;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
  } else if (bytes.size() - i == 2) {
    uint32_t v = (at(i) << 16) | (at(i + 1) << 8);
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(kAlphabet[(v >> 6) & 63]);
  }
  return out;
}

std::string Sha256(std::string_view bytes) {
  std::string out(SHA256_DIGEST_LENGTH, '\0');
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(),
         reinterpret_cast<unsigned char*>(out.data()));
  return out;
}

std::string Sha256Hex(std::string_view bytes) { return HexEncode(Sha256(bytes)); }

}  // namespace imgpipe
