// result.json is written by an exec step's program: outside input, like an upload. Any bytes must parse or fail with
// kInvalidArgument naming result.json, never crash; a result that parses holds only names the protocol allows.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "scripts/exec_protocol.hpp"
#include "scripts/script_manifest.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto result = imgpipe::ParseExecResult(text);
  if (!result.ok()) {
    if (result.error().kind != imgpipe::ErrorKind::kInvalidArgument) std::abort();
    if (result.error().message.rfind("result.json", 0) != 0) std::abort();
    return 0;
  }
  for (const auto& label : result->labels) {
    if (label.key.empty() || label.key.size() > 4096 || label.value.size() > 4096) std::abort();
  }
  for (const auto& r : result->renditions) {
    if (!imgpipe::IsPlainFileName(r.file)) std::abort();
    if (!r.format.empty() && !imgpipe::IsRenditionFormat(r.format)) std::abort();
    if (r.quality < 0 || r.quality > 100 || r.effort < -1 || r.effort > 9) std::abort();
  }
  if (result->image && !imgpipe::IsPlainFileName(*result->image)) std::abort();
  if (result->reject && result->reject->empty()) std::abort();
  return 0;
}
