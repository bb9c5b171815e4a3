// Stream record headers and claim checks are outside input (any producer on the topic). The input is split into
// headers and a value: lines "name=value" (a line without '=' is a header with a null value) up to an empty line,
// then the value. Any bytes must parse or fail with a coded error, never crash, and a parsed record must hold only
// what the documented rules allow.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "ingest/stream_record.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 64 * 1024) return 0;  // headers are small; the parser never reads image bytes
  std::string_view input(reinterpret_cast<const char*>(data), size);
  size_t end = input.find("\n\n");
  std::string_view head = input.substr(0, end);
  std::string_view value = end == std::string_view::npos ? std::string_view() : input.substr(end + 2);
  std::vector<imgpipe::StreamHeader> headers;
  while (!head.empty()) {
    size_t nl = head.find('\n');
    std::string_view line = head.substr(0, nl);
    head = nl == std::string_view::npos ? std::string_view() : head.substr(nl + 1);
    size_t eq = line.find('=');
    if (eq == std::string_view::npos) {
      headers.push_back({std::string(line), std::nullopt});
    } else {
      headers.push_back({std::string(line.substr(0, eq)), std::string(line.substr(eq + 1))});
    }
  }
  imgpipe::StreamRecordLimits limits;
  limits.max_metadata_bytes = 512;
  auto r = imgpipe::ParseStreamRecord(headers, value, limits);
  if (!r.ok()) {
    if (r.error().message.empty() || r.error().code.empty()) std::abort();
    for (char c : r.error().message) {
      if (c == '\n' || c == '\0') std::abort();  // messages never carry raw bytes
    }
    return 0;
  }
  if (r->metadata_json.size() > limits.max_metadata_bytes && r->metadata_json != "{}") std::abort();
  if (r->source_id && (r->source_id->empty() || r->source_id->size() > 512)) std::abort();
  if (r->claim && r->claim->container != "incoming") std::abort();
  if (!r->claim && value.empty()) std::abort();
  return 0;
}
