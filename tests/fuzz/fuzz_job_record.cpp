// Records on the Kafka jobs topics are outside input (anyone who can write the topic). The input is three lines
// split at the first two '\n': the imgpipe-attempts header, the imgpipe-not-before header (an empty line = absent),
// then the record's value. Any bytes must parse or fail with the coded error, never crash, and a parsed job must
// hold only what the format allows.
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string_view>

#include "core/ids.hpp"
#include "queue/kafka/job_record.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 16 * 1024) return 0;  // the parser refuses values over 4 KiB before reading them
  std::string_view input(reinterpret_cast<const char*>(data), size);
  auto next_line = [&]() -> std::optional<std::string_view> {
    size_t nl = input.find('\n');
    std::string_view line = input.substr(0, nl);
    input = nl == std::string_view::npos ? std::string_view() : input.substr(nl + 1);
    if (line.empty()) return std::nullopt;
    return line;
  };
  auto attempts = next_line();
  auto not_before = next_line();
  auto r = imgpipe::ParseJobRecord(input, attempts, not_before);
  if (!r.ok()) {
    if (r.error().code != "bad_job_record" || r.error().message.empty()) std::abort();
    return 0;
  }
  if (!imgpipe::IsValidImageId(r->job.image_id.value())) std::abort();
  if (r->job.pipeline.empty() || r->job.pipeline.size() > 128) std::abort();
  if (r->job.attempts < 0 || r->job.attempts > 1000) std::abort();
  if (!attempts && r->job.attempts != 0) std::abort();
  // What parses, encodes and parses again to the same job.
  auto again = imgpipe::ParseJobRecord(imgpipe::EncodeJobValue(r->job), std::nullopt, std::nullopt);
  if (!again.ok() || again->job.image_id != r->job.image_id || again->job.pipeline != r->job.pipeline) std::abort();
  return 0;
}
