// Range headers are outside input: any bytes must parse to "ignore", a range inside the object, or 416.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "http/range.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 8) return 0;
  uint64_t object_size = 0;
  for (int i = 0; i < 8; ++i) object_size = (object_size << 8) | data[i];
  object_size %= (1ull << 40);
  std::string_view header(reinterpret_cast<const char*>(data + 8), size - 8);
  auto r = imgpipe::ParseRangeHeader(header, object_size);
  if (r.ok() && r->has_value()) {
    const auto& range = **r;
    if (range.length == 0 || range.offset >= object_size || range.offset + range.length > object_size) std::abort();
  }
  return 0;
}
