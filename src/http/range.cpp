#include "http/range.hpp"

#include <string>

namespace imgpipe {
namespace {

bool ParseU64(std::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 19) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  *out = v;
  return true;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

Result<std::optional<ByteRange>> ParseRangeHeader(std::string_view header, uint64_t size) {
  header = Trim(header);
  constexpr std::string_view kUnit = "bytes=";
  if (header.size() <= kUnit.size() || header.substr(0, kUnit.size()) != kUnit) return std::optional<ByteRange>();
  std::string_view spec = Trim(header.substr(kUnit.size()));
  if (spec.find(',') != std::string_view::npos) return std::optional<ByteRange>();
  size_t dash = spec.find('-');
  if (dash == std::string_view::npos) return std::optional<ByteRange>();
  std::string_view first = Trim(spec.substr(0, dash));
  std::string_view last = Trim(spec.substr(dash + 1));
  auto unsatisfiable = [&] {
    return MakeError(ErrorKind::kRangeNotSatisfiable,
                     "range \"" + std::string(spec) + "\" is outside the object of " + std::to_string(size) + " bytes");
  };
  if (first.empty()) {
    uint64_t n;
    if (!ParseU64(last, &n)) return std::optional<ByteRange>();
    if (n == 0 || size == 0) return unsatisfiable();
    n = std::min(n, size);
    return std::optional<ByteRange>(ByteRange{size - n, n});
  }
  uint64_t a;
  if (!ParseU64(first, &a)) return std::optional<ByteRange>();
  uint64_t b = size == 0 ? 0 : size - 1;
  if (!last.empty()) {
    if (!ParseU64(last, &b) || b < a) return std::optional<ByteRange>();
  }
  if (a >= size) return unsatisfiable();
  b = std::min(b, size - 1);
  return std::optional<ByteRange>(ByteRange{a, b - a + 1});
}

}  // namespace imgpipe
