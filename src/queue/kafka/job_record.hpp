#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "core/clock.hpp"
#include "core/records.hpp"
#include "core/result.hpp"

namespace imgpipe {

//! Header names of a job record on the jobs topics (docs/OPERATIONS.md, "Kafka job queue").
inline constexpr std::string_view kJobAttemptsHeader = "imgpipe-attempts";     //!< attempts made before, decimal
inline constexpr std::string_view kJobNotBeforeHeader = "imgpipe-not-before";  //!< RFC 3339; retry topic only
inline constexpr std::string_view kJobErrorHeader = "imgpipe-error";           //!< the last attempt's error
//! Values longer than this are refused; a job record is small (an id, a script name, a time).
inline constexpr size_t kMaxJobRecordBytes = 4096;

//! A job as it travels on the jobs topics: the record's key is the image id (so one image's jobs share a partition
//! and one consumer), the value is JSON {"v":1,"image_id":...,"pipeline":...,"enqueued_at":...}.
struct JobRecord {
  Job job;                                //!< id is 0: the queue numbers the jobs it hands out
  std::optional<TimePoint> not_before;    //!< a retry waits until then
};

//! The record value of `job` (JSON, one line).
std::string EncodeJobValue(const Job& job);

//! Reads a record from a jobs topic. Outside input (anyone who can write the topic): kInvalidArgument with code
//! "bad_job_record" and a message naming the problem for a value that is not one of ours (too long, not JSON, a
//! bad image id or script name, a bad header), never a crash.
Result<JobRecord> ParseJobRecord(std::string_view value, std::optional<std::string_view> attempts_header,
                                 std::optional<std::string_view> not_before_header);

}  // namespace imgpipe
