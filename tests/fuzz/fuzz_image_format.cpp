// libFuzzer target: format detection and the allow-list check on arbitrary first bytes. Both must be total
// (never crash) and agree: a head is allowed exactly when its detected format is on the list.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "processing/image_format.hpp"
#include "processing/image_probe.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view head(reinterpret_cast<const char*>(data), size);
  const imgpipe::ImageFormat format = imgpipe::DetectFormat(head);
  imgpipe::ImageFormat round_trip = imgpipe::ImageFormat::kUnknown;
  if (format != imgpipe::ImageFormat::kUnknown &&
      (!imgpipe::ParseFormatName(imgpipe::FormatName(format), &round_trip) || round_trip != format)) {
    std::abort();
  }
  const imgpipe::ImageLimits limits;
  const bool listed = std::find(limits.allowed.begin(), limits.allowed.end(), format) != limits.allowed.end();
  const auto status = imgpipe::CheckFormatAllowed(head, limits);
  if (status.ok() != listed) std::abort();
  if (!status.ok() && status.error().kind != imgpipe::ErrorKind::kUnsupportedFormat) std::abort();
  return 0;
}
