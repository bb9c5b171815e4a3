#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"

namespace imgpipe {

//! One header of a stream record as it arrived; a header can be present with no value at all (null).
struct StreamHeader {
  std::string name;
  std::optional<std::string> value;
};

//! A blob already in one of imgpipe's stores, named by a claim-check record instead of carrying the bytes.
struct ClaimCheck {
  std::string container;
  std::string key;
};

//! What a stream record asks for, read from its headers (and, for a claim check, its value). The image bytes of an
//! inline record stay in the record; nothing here copies them.
struct StreamRecord {
  std::optional<std::string> source_id;   //!< imgpipe-source-id: the producer's id, seeds the image id
  std::string pipeline;                   //!< imgpipe-pipeline; empty = the default
  std::string metadata_json = "{}";       //!< imgpipe-meta-<name> headers as a JSON object of strings
  std::optional<std::string> content_type;//!< content-type, when it names an image type
  std::optional<ClaimCheck> claim;        //!< set: the value was a claim check, not image bytes
};

struct StreamRecordLimits {
  uint64_t max_metadata_bytes = 8 * 1024;              //!< limits.max_metadata_bytes, for the JSON object
  std::vector<std::string> claim_containers = {"incoming"};  //!< ingest.claim_containers
};

//! The content type that marks a claim check (application/json is accepted too).
inline constexpr std::string_view kClaimCheckContentType = "application/vnd.imgpipe.claim-check+json";

//! Reads a record's headers and, for claim checks, its value. Header names are case-insensitive; headers outside
//! the imgpipe- prefix (tracing and the like) are ignored except content-type. Errors are kInvalidArgument (code
//! "bad_header", "bad_claim_check" or "empty_record") or kTooLarge ("metadata_too_large"), with a message naming
//! the header; the caller sends such records to the dead-letter topic. Never reads the image bytes.
Result<StreamRecord> ParseStreamRecord(const std::vector<StreamHeader>& headers, std::string_view value,
                                       const StreamRecordLimits& limits);

//! True if `text` is well-formed UTF-8 (no overlongs, no surrogates, nothing past U+10FFFF).
bool IsValidUtf8(std::string_view text);

}  // namespace imgpipe
