#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/status.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/cidr.hpp"
#include "core/metrics.hpp"
#include "core/result.hpp"
#include "http/concurrency_limiter.hpp"
#include "http/tls_context.hpp"
#include "storage/blob_store.hpp"

namespace boost::beast {
template <class NextLayer>
class ssl_stream;
}

namespace imgpipe {

namespace asio = boost::asio;
namespace beast = boost::beast;

//! Which listener a request came in on (docs/OPERATIONS.md, "Listeners").
enum class Listener {
  kPublic,   //!< server.listen: the API
  kPrivate,  //!< admin.listen: admin endpoints and /metrics
};

//! One request as a handler sees it: the header at once, the body streamed on demand.
//! Lifetimes: valid only during the handler's coroutine; the connection owns it.
class HttpRequest {
 public:
  using Parser = beast::http::request_parser<beast::http::buffer_body>;
  using TlsStream = beast::ssl_stream<beast::tcp_stream>;

  //! Exactly one of `plain` and `tls` is set. Body reads stop at `deadline` (server.request_timeout) and after
  //! `body_timeout` without a byte (server.body_timeout).
  HttpRequest(beast::tcp_stream* plain, TlsStream* tls, beast::flat_buffer& buffer, Parser& parser,
              std::string request_id, std::string remote, Listener listener,
              std::chrono::steady_clock::time_point deadline, std::chrono::milliseconds body_timeout);

  const beast::http::request_header<>& header() const { return parser_.get().base(); }
  beast::http::verb method() const { return header().method(); }
  std::string_view target() const { return header().target(); }
  std::string_view path() const { return path_; }
  std::string_view query() const { return query_; }
  //! The decoded value of query parameter `name`, if present.
  std::optional<std::string> QueryParam(std::string_view name) const;
  std::string_view Header(std::string_view name) const;
  std::optional<uint64_t> ContentLength() const;
  const std::string& request_id() const { return request_id_; }
  const std::string& remote() const { return remote_; }
  Listener listener() const { return listener_; }

  //! Reads the next piece of the body into `buf`; 0 at the end of the body. Sends "100 Continue" first if the client
  //! asked for it. Errors: kInvalidArgument for a malformed body, kUnavailable if the client went away or timed out.
  asio::awaitable<Result<size_t>> ReadBody(std::span<char> buf);
  //! Reads the whole body, refusing more than `max_bytes` (kTooLarge).
  asio::awaitable<Result<std::string>> ReadAll(size_t max_bytes);
  bool BodyDone() const { return parser_.is_done(); }
  //! True once a body read ran out of time (server.body_timeout or server.request_timeout): the server then answers
  //! 408 and closes the connection, whatever the handler made of the error.
  bool BodyTimedOut() const { return body_timed_out_; }

 private:
  template <class Stream>
  asio::awaitable<Result<size_t>> ReadBodyFrom(Stream& stream, std::span<char> buf);

  beast::tcp_stream* plain_;
  TlsStream* tls_;
  beast::flat_buffer& buffer_;
  Parser& parser_;
  std::string request_id_;
  std::string remote_;
  Listener listener_;
  std::chrono::steady_clock::time_point deadline_;
  std::chrono::milliseconds body_timeout_;
  std::string path_;
  std::string query_;
  bool continue_sent_ = false;
  bool body_timed_out_ = false;
};

//! A response: headers plus either a body in memory or a stream from a blob.
struct HttpResponse {
  beast::http::status status = beast::http::status::ok;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string content_type = "application/json";
  std::unique_ptr<BlobReader> stream;  //!< when set, its bytes are the body and `stream_length` its length
  uint64_t stream_length = 0;
  //! The route label for metrics ("/v1/images/{id}"), set by the router.
  std::string route = "unmatched";
  //! What a handler wants in the audit record of this request beside who, what and the outcome (e.g. the SQL of an
  //! analyst query); the router writes the record.
  std::vector<std::pair<std::string, std::string>> audit_details;

  void SetHeader(std::string name, std::string value) { headers.emplace_back(std::move(name), std::move(value)); }
};

//! The JSON error response for `error`, in the one error shape.
HttpResponse ErrorResponse(const Error& error, const std::string& request_id);

struct ServerOptions {
  Listener listener = Listener::kPublic;
  std::string allow_key = "server.allow";  //!< the config key of `allow`, for the log line of a refused peer
  std::vector<Cidr> allow;            //!< peers that may connect; empty = any
  std::vector<Cidr> trusted_proxies;  //!< peers whose X-Forwarded-For names the client
  //! When set, connections are TLS with this holder's current context (see TlsContextHolder); else plain HTTP.
  std::shared_ptr<TlsContextHolder> tls;
  size_t max_header_bytes = 16 * 1024;            //!< larger headers get 431
  uint64_t max_body_bytes = 64ull * 1024 * 1024;  //!< a hard cap above the upload limit; handlers enforce theirs
  //! A keep-alive connection may wait this long for the first byte of its next request.
  std::chrono::milliseconds idle_timeout{30000};
  //! From a request's first byte (or from accept, for the TLS handshake) to the end of its header: slow-header
  //! clients (slowloris) are cut off after it.
  std::chrono::milliseconds header_timeout{10000};
  //! The longest wait for the next byte of a request body.
  std::chrono::milliseconds body_timeout{15000};
  std::chrono::milliseconds request_timeout{60000};
  //! Requests in flight at once, shared by listeners that share it; none = no limit. A request over the limit waits
  //! up to `in_flight_wait` for a slot, then gets 503 with Retry-After. Health checks (/livez, /readyz) bypass it.
  ConcurrencyLimiter* in_flight = nullptr;
  std::chrono::milliseconds in_flight_wait{5000};
  //! Counts the requests the server itself cuts off (imgpipe_http_timeouts_total, declared by
  //! DeclareImgpipeMetrics); none = not counted. Must outlive the server.
  Metrics* metrics = nullptr;
};

using HttpHandler = std::function<asio::awaitable<HttpResponse>(HttpRequest&)>;
//! Called after each response with (method, route, status, seconds).
using AccessLogger = std::function<void(const HttpRequest&, const HttpResponse&, double seconds)>;

//! An HTTP/1.1 server on Boost.Beast with one coroutine per connection, keep-alive, streamed request bodies and
//! streamed responses. Thread-safe; run its io_context on several threads.
class HttpServer {
 public:
  HttpServer(asio::io_context& io, ServerOptions options, HttpHandler handler, AccessLogger logger);

  //! Binds and listens; returns the bound port (useful with port 0).
  Result<uint16_t> Listen(const std::string& host, uint16_t port);
  void Start();
  //! Stops accepting new connections; requests in flight continue, and keep-alive connections close after their
  //! current response.
  void StopAccepting();
  bool stopping() const { return stopping_; }
  int inflight() const { return inflight_.load(); }

 private:
  //! The client named by X-Forwarded-For from a trusted proxy `peer` (see ServerOptions::trusted_proxies).
  std::string ForwardedClient(std::string_view header, const std::string& peer) const;
  asio::awaitable<void> AcceptLoop();
  asio::awaitable<void> PlainSession(asio::ip::tcp::socket socket);
  //! Lifetimes: `ctx` is the context of this connection's handshake, kept for the connection's whole life.
  asio::awaitable<void> TlsSession(asio::ip::tcp::socket socket, std::shared_ptr<asio::ssl::context> ctx);
  //! The request loop of one connection; `tls` is the same stream as `stream` when it is a TLS one.
  template <class Stream>
  asio::awaitable<void> Serve(Stream& stream, beast::tcp_stream& tcp, HttpRequest::TlsStream* tls);

  asio::io_context& io_;
  ServerOptions options_;
  HttpHandler handler_;
  AccessLogger logger_;
  asio::ip::tcp::acceptor acceptor_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> inflight_{0};
};

//! Runs `fn` on a thread of `pool` and resumes the coroutine on its own executor afterwards: for blocking work (fsync,
//! SQLite, libvips) that must not stall the I/O threads. (The bind_executor matters: a plain post(pool, use_awaitable)
//! would resume on the coroutine's executor, i.e. run `fn` on the I/O thread after all; server_test checks it.)
template <typename F>
auto RunBlocking(asio::thread_pool& pool, F fn) -> asio::awaitable<decltype(fn())> {
  auto home = co_await asio::this_coro::executor;
  co_await asio::post(asio::bind_executor(pool.get_executor(), asio::use_awaitable));
  auto result = fn();
  co_await asio::post(home, asio::use_awaitable);
  co_return result;
}

//! Parses "host:port" (IPv4, [IPv6] or a name); false if malformed.
bool ParseHostPort(std::string_view text, std::string* host, uint16_t* port);

}  // namespace imgpipe
