#include "queue/kafka/job_record.hpp"

#include <boost/json.hpp>

#include <charconv>

#include "core/ids.hpp"

namespace imgpipe {

namespace {

constexpr size_t kMaxPipelineName = 128;
constexpr int kMaxAttempts = 1000;

Error Bad(std::string message) { return MakeError(ErrorKind::kInvalidArgument, std::move(message), "bad_job_record"); }

// A script name as the warehouse and the script store accept it, or "default".
bool IsPipelineName(std::string_view s) {
  if (s.empty() || s.size() > kMaxPipelineName) return false;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                    c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

std::string EncodeJobValue(const Job& job) {
  boost::json::object o;
  o["v"] = 1;
  o["image_id"] = job.image_id.value();
  o["pipeline"] = job.pipeline.empty() ? std::string("default") : job.pipeline;
  o["enqueued_at"] = FormatRfc3339(job.enqueued_at);
  return boost::json::serialize(o);
}

Result<JobRecord> ParseJobRecord(std::string_view value, std::optional<std::string_view> attempts_header,
                                 std::optional<std::string_view> not_before_header) {
  if (value.size() > kMaxJobRecordBytes) {
    return Bad("job record is " + std::to_string(value.size()) + " bytes; a job is at most " +
               std::to_string(kMaxJobRecordBytes));
  }
  boost::system::error_code ec;
  boost::json::value parsed = boost::json::parse(value, ec);
  if (ec || !parsed.is_object()) return Bad("job record is not a JSON object");
  const boost::json::object& o = parsed.as_object();
  const auto* version = o.if_contains("v");
  if (version == nullptr || !version->is_int64() || version->as_int64() != 1) {
    return Bad("job record has no \"v\": 1 (a record from another producer, or a newer imgpipe)");
  }
  JobRecord out;
  const auto* id = o.if_contains("image_id");
  if (id == nullptr || !id->is_string() || !IsValidImageId(id->as_string())) {
    return Bad("job record has no valid \"image_id\"");
  }
  out.job.image_id = ImageId(std::string(id->as_string()));
  const auto* pipeline = o.if_contains("pipeline");
  if (pipeline == nullptr || !pipeline->is_string() || !IsPipelineName(pipeline->as_string())) {
    return Bad("job record has no valid \"pipeline\" (a script name of letters, digits, '-', '_', '.')");
  }
  out.job.pipeline = std::string(pipeline->as_string());
  const auto* enqueued = o.if_contains("enqueued_at");
  if (enqueued == nullptr || !enqueued->is_string() || !ParseRfc3339(enqueued->as_string(), &out.job.enqueued_at)) {
    return Bad("job record has no valid \"enqueued_at\" (RFC 3339)");
  }
  if (attempts_header) {
    int attempts = -1;
    const char* end = attempts_header->data() + attempts_header->size();
    auto [ptr, err] = std::from_chars(attempts_header->data(), end, attempts);
    if (err != std::errc() || ptr != end || attempts < 0 || attempts > kMaxAttempts) {
      return Bad("header " + std::string(kJobAttemptsHeader) + " is not a count from 0 to " +
                 std::to_string(kMaxAttempts));
    }
    out.job.attempts = attempts;
  }
  if (not_before_header) {
    TimePoint t;
    if (!ParseRfc3339(*not_before_header, &t)) {
      return Bad("header " + std::string(kJobNotBeforeHeader) + " is not an RFC 3339 time");
    }
    out.not_before = t;
  }
  return out;
}

}  // namespace imgpipe
