#include "http/error_status.hpp"

namespace imgpipe {

namespace http = boost::beast::http;

http::status ToHttpStatus(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidArgument: return http::status::bad_request;
    case ErrorKind::kUnauthenticated: return http::status::unauthorized;
    case ErrorKind::kPermissionDenied: return http::status::forbidden;
    case ErrorKind::kNotFound: return http::status::not_found;
    case ErrorKind::kConflict: return http::status::conflict;
    case ErrorKind::kTooLarge: return http::status::payload_too_large;
    case ErrorKind::kUnsupportedFormat: return http::status::unsupported_media_type;
    case ErrorKind::kInvalidImage: return http::status::unprocessable_entity;
    case ErrorKind::kRangeNotSatisfiable: return http::status::range_not_satisfiable;
    case ErrorKind::kUnavailable: return http::status::service_unavailable;
    case ErrorKind::kRetry: return http::status::service_unavailable;
    case ErrorKind::kIntegrity: return http::status::internal_server_error;
    case ErrorKind::kRateLimited: return http::status::too_many_requests;
    case ErrorKind::kInternal: return http::status::internal_server_error;
  }
  return http::status::internal_server_error;
}

}  // namespace imgpipe
