#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/clock.hpp"
#include "core/result.hpp"

namespace imgpipe {

//! Where a client connects: scheme, host and port of one HTTP(S) endpoint, plus a path prefix.
struct HttpEndpoint {
  bool https = false;
  std::string host;       //!< a name or an IPv4/IPv6 literal (without brackets)
  uint16_t port = 0;
  std::string base_path;  //!< "" or "/something" without a trailing '/'

  //! The Host header value: host, plus ":port" unless it is the scheme's default port.
  std::string HostHeader() const;
};

//! Parses "http://host[:port][/path]" or "https://...". kInvalidArgument naming the problem otherwise (no query,
//! fragment or user info allowed: credentials never travel in URLs here).
Result<HttpEndpoint> ParseHttpEndpoint(std::string_view url);

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

//! Case-insensitive lookup; nullopt if absent.
std::optional<std::string_view> FindHeader(const HttpHeaders& headers, std::string_view name);

//! One request. `target` is the path and query, already percent-encoded, relative to the host (base_path included
//! by the caller, which signs it). `body` is borrowed: it must stay valid until Send/Open returns.
struct HttpClientRequest {
  std::string method = "GET";
  std::string target = "/";
  HttpHeaders headers;
  std::string_view body;
  //! Safe to send again after an unknown outcome (GET, HEAD, DELETE, PUT of the same bytes). Only idempotent requests
  //! are retried on 429/5xx and timeouts; any request is resent once if a reused keep-alive connection turned out to
  //! be closed before a single response byte arrived.
  bool idempotent = true;
};

//! The status and headers of a response.
struct HttpClientResponseHead {
  int status = 0;
  HttpHeaders headers;
  std::optional<uint64_t> content_length;

  std::optional<std::string_view> Header(std::string_view name) const { return FindHeader(headers, name); }
};

//! A response with its whole body (for small bodies: errors, XML listings).
struct HttpClientResponse {
  HttpClientResponseHead head;
  std::string body;
};

class HttpClient;

//! A response whose body is read in pieces, so a large object never sits in memory. Holds its connection until
//! destroyed; a connection whose body was read to the end goes back to the client's pool, any other is closed.
//! Lifetimes: the client must outlive the stream. Not thread-safe.
class HttpClientStream {
 public:
  virtual ~HttpClientStream() = default;
  virtual const HttpClientResponseHead& Head() const = 0;
  //! Reads up to buf.size() body bytes; 0 at the end. kUnavailable if the connection fails or times out.
  virtual Result<size_t> Read(std::span<char> buf) = 0;
  //! Reads the rest of the body into a string; kTooLarge if it is over `max_bytes`.
  Result<std::string> ReadAll(size_t max_bytes);
};

//! Retry policy for idempotent requests: exponential backoff with full jitter (a random delay in [0, min(max_delay,
//! base_delay * 2^attempt)]), so many clients that failed together do not come back together.
struct HttpRetryPolicy {
  int max_attempts = 4;  //!< first try included
  std::chrono::milliseconds base_delay{100};
  std::chrono::milliseconds max_delay{5000};
};

struct HttpClientOptions {
  std::chrono::milliseconds connect_timeout{5000};
  //! Longest wait for any single read or write to make progress (not for the whole transfer, so large bodies work).
  std::chrono::milliseconds io_timeout{30000};
  //! Idle keep-alive connections kept for reuse; more concurrent requests open more connections.
  size_t max_idle_connections = 16;
  HttpRetryPolicy retry;
  //! For https: verify the server's certificate against the system's CA store (and `ca_file` when set) and its name.
  std::string ca_file;
  //! Connect to this host name or IPv4 address instead of the endpoint's host, keeping the endpoint's name in the
  //! Host header, the signature and the TLS name check (curl's --connect-to): for virtual-hosted names that DNS
  //! does not resolve, e.g. a test server on 127.0.0.1. Empty: resolve the endpoint's host.
  std::string connect_host;
};

//! Called before every attempt (so a retry gets a fresh date and signature); adds authentication headers.
using HttpSigner = std::function<Status(HttpClientRequest&)>;

//! A small synchronous HTTP/1.1 client for one endpoint (Boost.Beast over Asio; TLS through OpenSSL), with a pool of
//! keep-alive connections, per-operation timeouts and retries. Network failures, timeouts, 429 and 5xx after the
//! last attempt come back as the response (for statuses) or as kUnavailable (for network failures, naming the
//! endpoint); mapping statuses to ErrorKind is the caller's (see HttpStatusError). Thread-safe: concurrent calls use
//! separate connections.
class HttpClient {
 public:
  //! kInvalidArgument if TLS cannot be set up (e.g. an unreadable ca_file).
  static Result<std::unique_ptr<HttpClient>> Create(HttpEndpoint endpoint, HttpClientOptions options = {});
  ~HttpClient();

  //! Sends the request and reads the whole response body (at most `max_body` bytes, else kTooLarge). Retries per
  //! the policy; the final response is returned whatever its status.
  Result<HttpClientResponse> Send(HttpClientRequest request, const HttpSigner& sign, size_t max_body = 1 << 20);
  //! Sends the request and returns once the response head has arrived; the body is read through the stream.
  //! Retries (for idempotent requests) happen only before the body is handed out: when the status is 429 or 5xx the
  //! body is drained and the request sent again.
  Result<std::unique_ptr<HttpClientStream>> Open(HttpClientRequest request, const HttpSigner& sign);

  const HttpEndpoint& endpoint() const { return endpoint_; }
  //! Connections opened so far (for tests of connection reuse).
  uint64_t connections_opened() const;

  class Connection;

 private:
  class Stream;
  friend class Stream;

  HttpClient(HttpEndpoint endpoint, HttpClientOptions options, void* ssl_ctx);
  Result<std::unique_ptr<Connection>> Connect();
  std::unique_ptr<Connection> TakeIdle();
  void GiveBack(std::unique_ptr<Connection> c);
  Result<std::unique_ptr<HttpClientStream>> OpenOnce(HttpClientRequest& request, bool* retryable_failure);
  std::chrono::milliseconds BackoffDelay(int attempt);

  HttpEndpoint endpoint_;
  HttpClientOptions options_;
  void* ssl_ctx_;  // boost::asio::ssl::context*, owned; kept opaque so this header stays light
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Connection>> idle_;
  uint64_t opened_ = 0;
};

//! True for statuses worth retrying after a pause: 408, 429, 500, 502, 503, 504.
bool IsRetryableHttpStatus(int status);

//! The ErrorKind for an error status from a storage service: 404 -> kNotFound, 409/412 -> kConflict,
//! 401/403 -> kPermissionDenied, 416 -> kRangeNotSatisfiable, 413 -> kTooLarge, 408/429/5xx -> kUnavailable,
//! other 4xx -> kInternal (we sent something the service rejects: a bug or a misconfiguration).
ErrorKind HttpStatusErrorKind(int status);

//! "<what>: <service> answered <status> <code>: <message>" as an Error of HttpStatusErrorKind(status).
Error HttpStatusError(std::string_view what, std::string_view service, int status, std::string_view code,
                      std::string_view message);

//! IMF-fixdate (RFC 9110), e.g. "Sun, 06 Nov 1994 08:49:37 GMT".
std::string FormatHttpDate(TimePoint t);
//! Parses IMF-fixdate; false if `text` is not one.
bool ParseHttpDate(std::string_view text, TimePoint* out);

//! Percent-encodes everything but RFC 3986 unreserved characters; '/' too unless `keep_slash`.
std::string UriEncode(std::string_view s, bool keep_slash);

//! Decodes %XX escapes (a malformed escape is kept as it is); '+' stays '+'.
std::string UriDecode(std::string_view s);

//! ASCII lowercase.
std::string AsciiLower(std::string_view s);

}  // namespace imgpipe
