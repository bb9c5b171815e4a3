#pragma once

#include <optional>
#include <string_view>

#include "core/result.hpp"
#include "storage/blob_store.hpp"

namespace imgpipe {

//! Parses a Range header (RFC 9110 section 14) for an object of `size` bytes. Returns nullopt when the header is
//! empty, not in bytes units, or asks for several ranges (then the whole object is served, which the RFC allows).
//! Forms: "bytes=a-b", "bytes=a-", "bytes=-n". kRangeNotSatisfiable when the range starts past the end or a suffix is
//! empty; kInvalidArgument never: a malformed header is ignored, as the RFC says.
Result<std::optional<ByteRange>> ParseRangeHeader(std::string_view header, uint64_t size);

}  // namespace imgpipe
