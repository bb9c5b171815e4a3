// Query strings of the API's list endpoints (GET /v1/images, GET /v1/audit) are outside input: any bytes must give a
// filter within the documented bounds or a kInvalidArgument, never a crash.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "api/list_params.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 16384) return 0;
  std::string_view query(reinterpret_cast<const char*>(data), size);
  auto images = imgpipe::ParseImageListQuery(query);
  if (images.ok() && (images->limit < 1 || images->limit > 500)) std::abort();
  if (!images.ok() && images.error().kind != imgpipe::ErrorKind::kInvalidArgument) std::abort();
  auto audit = imgpipe::ParseAuditQuery(query);
  if (audit.ok() && (audit->limit < 1 || audit->limit > 10000)) std::abort();
  if (!audit.ok() && audit.error().kind != imgpipe::ErrorKind::kInvalidArgument) std::abort();
  return 0;
}
