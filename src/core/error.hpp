#pragma once

#include <string>
#include <string_view>

namespace imgpipe {

//! What went wrong, as a caller branches on it. Every backend maps its library's errors to one of these at its
//! boundary. When adding a value here, also add it to ToHttpStatus() (src/http/error_status.cpp) and to
//! ErrorKindName() (error.cpp).
enum class ErrorKind {
  kInvalidArgument,    //!< the request or input is malformed (400)
  kUnauthenticated,    //!< no credentials, or unknown ones (401)
  kPermissionDenied,   //!< known credentials, wrong role (403)
  kNotFound,           //!< the thing does not exist, or no longer (404)
  kConflict,           //!< the state forbids it, e.g. an idempotency key reused with another body (409)
  kTooLarge,           //!< over a byte, pixel or frame limit (413)
  kUnsupportedFormat,  //!< a format outside the allow-list (415)
  kInvalidImage,       //!< an allowed format that does not decode strictly (422)
  kRangeNotSatisfiable,//!< a byte range outside the object (416)
  kRateLimited,        //!< too many requests from one API key or address; retry after a while (429)
  kUnavailable,        //!< a dependency is down; retrying later may work (503)
  kRetry,              //!< a transient failure inside a backend; the caller may retry now (503 if surfaced)
  kIntegrity,          //!< stored data failed its integrity check (tampered, truncated, wrong key): never served (500)
  kInternal,           //!< a bug or an environment failure we cannot classify (500)
};

std::string_view ErrorKindName(ErrorKind kind);

//! An error a caller can act on. `code` is a stable machine-readable name for API clients (e.g. "invalid_image");
//! when empty, ErrorKindName(kind) is used. `message` says what happened, to what, and what to do.
struct Error {
  ErrorKind kind = ErrorKind::kInternal;
  std::string message;
  std::string code;

  std::string_view Code() const { return code.empty() ? ErrorKindName(kind) : std::string_view(code); }
};

inline Error MakeError(ErrorKind kind, std::string message, std::string code = {}) {
  return Error{kind, std::move(message), std::move(code)};
}

}  // namespace imgpipe
