// libFuzzer target: ParseExif on arbitrary bytes. It must never crash, hang or read out of bounds, and a block it
// accepts must give an orientation in 1..8 and coordinates in range.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "processing/exif.hpp"

namespace {

void Check(std::string_view block) {
  const auto parsed = imgpipe::ParseExif(block);
  if (!parsed.ok()) return;
  const imgpipe::ExifInfo& info = parsed.value();
  if (info.orientation && (*info.orientation < 1 || *info.orientation > 8)) std::abort();
  if (info.gps_lat && (*info.gps_lat < -90.0 || *info.gps_lat > 90.0)) std::abort();
  if (info.gps_lon && (*info.gps_lon < -180.0 || *info.gps_lon > 180.0)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  Check(input);
  // Seeds are whole photos (corpora/exif): also parse from their "Exif\0\0" marker on, as much as an APP1 segment
  // holds, so the mutations land in real TIFF structures.
  if (const size_t at = input.find(std::string_view("Exif\0\0", 6)); at != std::string_view::npos) {
    Check(input.substr(at, 65533));
  }
  return 0;
}
