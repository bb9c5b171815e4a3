#pragma once

#include <string>
#include <string_view>

#include "http_client/http_client.hpp"

namespace imgpipe {

//! AWS Signature Version 4 as pure functions: no I/O, no clock (the caller passes the x-amz-date value).

struct SigV4Key {
  std::string access_key;
  std::string secret_key;
  std::string region;             //!< e.g. "us-east-1"
  std::string service = "s3";
};

struct SigV4Signature {
  std::string canonical_request;
  std::string string_to_sign;
  std::string signed_headers;     //!< "host;x-amz-date"
  std::string signature;          //!< lowercase hex
  std::string authorization;      //!< the Authorization header value
};

//! Signs a request. `target` is the path and query as sent (percent-encoded); the canonical query re-encodes each
//! name and value (RFC 3986 unreserved kept) and sorts them. Every header in `headers` is signed (names lowercased,
//! values trimmed, sorted); they must include Host and X-Amz-Date (format "20130524T000000Z").
//! `payload_hash` is the lowercase hex SHA-256 of the body, or "UNSIGNED-PAYLOAD".
SigV4Signature SignV4(std::string_view method, std::string_view target, const HttpHeaders& headers,
                      std::string_view payload_hash, const SigV4Key& key, std::string_view amz_date);

//! "20130524T000000Z" for `t` (UTC).
std::string AmzDate(TimePoint t);

}  // namespace imgpipe
