#include "core/error.hpp"

namespace imgpipe {

std::string_view ErrorKindName(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidArgument: return "invalid_argument";
    case ErrorKind::kUnauthenticated: return "unauthenticated";
    case ErrorKind::kPermissionDenied: return "permission_denied";
    case ErrorKind::kNotFound: return "not_found";
    case ErrorKind::kConflict: return "conflict";
    case ErrorKind::kTooLarge: return "too_large";
    case ErrorKind::kUnsupportedFormat: return "unsupported_format";
    case ErrorKind::kInvalidImage: return "invalid_image";
    case ErrorKind::kRangeNotSatisfiable: return "range_not_satisfiable";
    case ErrorKind::kUnavailable: return "unavailable";
    case ErrorKind::kRetry: return "retry";
    case ErrorKind::kIntegrity: return "integrity_error";
    case ErrorKind::kRateLimited: return "rate_limited";
    case ErrorKind::kInternal: return "internal";
  }
  return "internal";
}

}  // namespace imgpipe
