#include "http/server.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <array>

#include "core/ids.hpp"
#include "core/log.hpp"
#include "http/error_status.hpp"
#include "http/query_string.hpp"

namespace imgpipe {

namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

// A deadline for one read that cancels the read instead of closing the socket (which is what tcp_stream's own expiry
// does), so the connection can still carry a 408 afterwards. The timer shares the socket's strand; once this object
// is gone its handler touches nothing. Lifetimes: `socket` must outlive this object.
class ReadDeadline {
 public:
  ReadDeadline(tcp::socket& socket, std::chrono::steady_clock::time_point when)
      : timer_(socket.get_executor()), state_(std::make_shared<State>(State::kArmed)) {
    timer_.expires_at(when);
    timer_.async_wait([state = state_, s = &socket](const beast::error_code& ec) {
      if (ec || *state != State::kArmed) return;
      *state = State::kFired;
      beast::error_code ignored;
      s->cancel(ignored);
    });
  }
  ~ReadDeadline() {
    if (*state_ == State::kArmed) *state_ = State::kDisarmed;
    timer_.cancel();
  }
  ReadDeadline(const ReadDeadline&) = delete;
  ReadDeadline& operator=(const ReadDeadline&) = delete;

  //! True if the deadline passed and cancelled the read.
  bool Fired() const { return *state_ == State::kFired; }

 private:
  enum class State { kArmed, kFired, kDisarmed };
  asio::steady_timer timer_;
  std::shared_ptr<State> state_;
};

}  // namespace

HttpRequest::HttpRequest(beast::tcp_stream* plain, TlsStream* tls, beast::flat_buffer& buffer, Parser& parser,
                         std::string request_id, std::string remote, Listener listener,
                         std::chrono::steady_clock::time_point deadline, std::chrono::milliseconds body_timeout)
    : plain_(plain), tls_(tls), buffer_(buffer), parser_(parser), request_id_(std::move(request_id)),
      remote_(std::move(remote)), listener_(listener), deadline_(deadline), body_timeout_(body_timeout) {
  std::string_view t = header().target();
  size_t q = t.find('?');
  path_ = std::string(t.substr(0, q));
  if (q != std::string_view::npos) query_ = std::string(t.substr(q + 1));
}

std::optional<std::string> HttpRequest::QueryParam(std::string_view name) const {
  return QueryStringParam(query_, name);
}

std::string_view HttpRequest::Header(std::string_view name) const {
  auto it = header().find(name);
  if (it == header().end()) return {};
  return it->value();
}

std::optional<uint64_t> HttpRequest::ContentLength() const {
  auto len = parser_.content_length();
  if (!len) return std::nullopt;
  return *len;
}

asio::awaitable<Result<size_t>> HttpRequest::ReadBody(std::span<char> buf) {
  if (tls_ != nullptr) co_return co_await ReadBodyFrom(*tls_, buf);
  co_return co_await ReadBodyFrom(*plain_, buf);
}

template <class Stream>
asio::awaitable<Result<size_t>> HttpRequest::ReadBodyFrom(Stream& stream, std::span<char> buf) {
  if (parser_.is_done()) co_return size_t{0};
  beast::tcp_stream& base = beast::get_lowest_layer(stream);
  if (!continue_sent_) {
    continue_sent_ = true;
    if (beast::iequals(Header("Expect"), "100-continue")) {
      http::response<http::empty_body> cont{http::status::continue_, header().version()};
      beast::error_code ec;
      co_await http::async_write(stream, cont, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return MakeError(ErrorKind::kUnavailable, "client went away: " + ec.message());
    }
  }
  size_t total = 0;
  while (total == 0 && !parser_.is_done()) {
    parser_.get().body().data = buf.data();
    parser_.get().body().size = buf.size();
    beast::error_code ec;
    // The sooner of the request's deadline and the idle bound: a client that trickles its body cannot hold the
    // connection (and its spool file) for longer than request_timeout, nor stall for longer than body_timeout.
    const auto now = std::chrono::steady_clock::now();
    const bool idle_first = now + body_timeout_ < deadline_;
    bool timed_out = false;
    base.expires_never();
    {
      ReadDeadline read_deadline(base.socket(), idle_first ? now + body_timeout_ : deadline_);
      co_await http::async_read(stream, buffer_, parser_, asio::redirect_error(asio::use_awaitable, ec));
      timed_out = ec && read_deadline.Fired();
    }
    base.expires_at(deadline_);  // bounds what the handler writes next
    total = buf.size() - parser_.get().body().size;
    if (ec == http::error::need_buffer) ec = {};
    if (ec == http::error::body_limit) {
      co_return MakeError(ErrorKind::kTooLarge, "request body is larger than the server accepts");
    }
    if (timed_out) {
      body_timed_out_ = true;
      co_return MakeError(ErrorKind::kInvalidArgument,
                          idle_first ? "no request body byte for " + std::to_string(body_timeout_.count()) +
                                           " ms (server.body_timeout)"
                                     : std::string("the request body did not arrive within server.request_timeout"),
                          "timeout");
    }
    if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == http::error::partial_message) {
      co_return MakeError(ErrorKind::kInvalidArgument, "the client closed the connection before the body ended");
    }
    if (ec) co_return MakeError(ErrorKind::kInvalidArgument, "malformed request body: " + ec.message());
  }
  co_return total;
}

asio::awaitable<Result<std::string>> HttpRequest::ReadAll(size_t max_bytes) {
  std::string out;
  std::array<char, 16 * 1024> chunk;
  for (;;) {
    auto n = co_await ReadBody(chunk);
    if (!n.ok()) co_return n.error();
    if (*n == 0) break;
    if (out.size() + *n > max_bytes) {
      co_return MakeError(ErrorKind::kTooLarge,
                          "request body is larger than " + std::to_string(max_bytes) + " bytes");
    }
    out.append(chunk.data(), *n);
  }
  co_return out;
}

HttpResponse ErrorResponse(const Error& error, const std::string& request_id) {
  HttpResponse r;
  r.status = ToHttpStatus(error.kind);
  boost::json::object inner;
  inner["code"] = error.Code();
  inner["message"] = error.message;
  inner["request_id"] = request_id;
  boost::json::object outer;
  outer["error"] = std::move(inner);
  r.body = boost::json::serialize(outer);
  if (error.kind == ErrorKind::kUnauthenticated) r.SetHeader("WWW-Authenticate", "Bearer realm=\"imgpipe\"");
  return r;
}

bool ParseHostPort(std::string_view text, std::string* host, uint16_t* port) {
  size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 >= text.size()) return false;
  std::string_view h = text.substr(0, colon);
  std::string_view p = text.substr(colon + 1);
  if (h.front() == '[') {
    if (h.back() != ']') return false;
    h = h.substr(1, h.size() - 2);
  }
  unsigned v = 0;
  for (char c : p) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<unsigned>(c - '0');
    if (v > 65535) return false;
  }
  *host = std::string(h);
  *port = static_cast<uint16_t>(v);
  return true;
}

HttpServer::HttpServer(asio::io_context& io, ServerOptions options, HttpHandler handler, AccessLogger logger)
    : io_(io), options_(options), handler_(std::move(handler)), logger_(std::move(logger)), acceptor_(io) {}

Result<uint16_t> HttpServer::Listen(const std::string& host, uint16_t port) {
  beast::error_code ec;
  auto address = asio::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
  if (ec) return MakeError(ErrorKind::kInvalidArgument, "server.listen: \"" + host + "\" is not an IP address");
  tcp::endpoint ep(address, port);
  acceptor_.open(ep.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(ep, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return MakeError(ErrorKind::kUnavailable, "cannot listen on " + host + ":" + std::to_string(port) + ": " +
                                                  ec.message() + " (server.listen)");
  }
  if (options_.tls && !options_.tls->Current()) {
    return MakeError(ErrorKind::kInternal, "TLS is on but no certificate was loaded (TlsContextHolder::Load)");
  }
  return acceptor_.local_endpoint().port();
}

void HttpServer::Start() { asio::co_spawn(acceptor_.get_executor(), AcceptLoop(), asio::detached); }

void HttpServer::StopAccepting() {
  stopping_ = true;
  asio::post(acceptor_.get_executor(), [this] {
    beast::error_code ec;
    acceptor_.close(ec);
  });
}

asio::awaitable<void> HttpServer::AcceptLoop() {
  while (!stopping_) {
    beast::error_code ec;
    tcp::socket socket(asio::make_strand(io_));
    co_await acceptor_.async_accept(socket, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (stopping_ || ec == asio::error::operation_aborted) break;
      LogWarn("accept failed", {{"error", ec.message()}});
      continue;
    }
    if (!options_.allow.empty()) {
      auto peer = socket.remote_endpoint(ec);
      if (ec || !AnyCidrContains(options_.allow, peer.address())) {
        LogWarn("connection refused by " + options_.allow_key,
                {{"remote", ec ? std::string("?") : peer.address().to_string()}});
        socket.close(ec);
        continue;
      }
    }
    socket.set_option(tcp::no_delay(true), ec);
    auto executor = socket.get_executor();
    if (options_.tls) {
      asio::co_spawn(executor, TlsSession(std::move(socket), options_.tls->Current()), asio::detached);
    } else {
      asio::co_spawn(executor, PlainSession(std::move(socket)), asio::detached);
    }
  }
}

namespace {

// Writes `response` to the stream; streams its blob body when it has one.
template <class Stream>
asio::awaitable<beast::error_code> WriteResponse(Stream& stream, HttpResponse& r, unsigned version,
                                                 bool keep_alive, bool head_only) {
  beast::error_code ec;
  if (!r.stream) {
    http::response<http::string_body> res{r.status, version};
    res.set(http::field::server, "imgpipe");
    if (!r.body.empty() || r.status != http::status::no_content) res.set(http::field::content_type, r.content_type);
    for (auto& [k, v] : r.headers) res.insert(k, v);
    res.keep_alive(keep_alive);
    if (head_only) {
      res.content_length(r.body.size());
    } else {
      res.body() = std::move(r.body);
      res.prepare_payload();
    }
    if (r.status == http::status::no_content || r.status == http::status::not_modified) {
      res.body().clear();
      res.erase(http::field::content_length);
      res.erase(http::field::content_type);
    }
    co_await http::async_write(stream, res, asio::redirect_error(asio::use_awaitable, ec));
    co_return ec;
  }
  http::response<http::buffer_body> res{r.status, version};
  res.set(http::field::server, "imgpipe");
  res.set(http::field::content_type, r.content_type);
  for (auto& [k, v] : r.headers) res.insert(k, v);
  res.keep_alive(keep_alive);
  res.content_length(r.stream_length);
  http::response_serializer<http::buffer_body> sr{res};
  if (head_only) {
    co_await http::async_write_header(stream, sr, asio::redirect_error(asio::use_awaitable, ec));
    co_return ec;
  }
  std::vector<char> chunk(256 * 1024);
  co_await http::async_write_header(stream, sr, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return ec;
  uint64_t sent = 0;
  for (;;) {
    auto n = r.stream->Read(chunk);
    if (!n.ok()) {
      // The header is out: the only honest signal left is to cut the connection.
      LogError("blob read failed mid-response", {{"error", n.error().message}});
      co_return beast::error_code(asio::error::connection_aborted);
    }
    sent += *n;
    res.body().data = *n ? chunk.data() : nullptr;
    res.body().size = *n;
    res.body().more = *n != 0 && sent < r.stream_length;
    co_await http::async_write(stream, sr, asio::redirect_error(asio::use_awaitable, ec));
    if (ec == http::error::need_buffer) ec = {};
    if (ec) co_return ec;
    if (*n == 0 || sent >= r.stream_length) break;
  }
  if (sent < r.stream_length) co_return beast::error_code(asio::error::connection_aborted);
  co_return ec;
}

}  // namespace

std::string HttpServer::ForwardedClient(std::string_view header, const std::string& peer) const {
  std::string client = peer;
  while (!header.empty()) {
    const size_t comma = header.rfind(',');
    std::string_view entry = comma == std::string_view::npos ? header : header.substr(comma + 1);
    header = comma == std::string_view::npos ? std::string_view() : header.substr(0, comma);
    while (!entry.empty() && entry.front() == ' ') entry.remove_prefix(1);
    while (!entry.empty() && entry.back() == ' ') entry.remove_suffix(1);
    boost::system::error_code ec;
    auto address = boost::asio::ip::make_address(std::string(entry), ec);
    if (ec) break;  // not an address: trust nothing further left
    client = address.to_string();
    if (!AnyCidrContains(options_.trusted_proxies, address)) break;
  }
  return client;
}

asio::awaitable<void> HttpServer::PlainSession(tcp::socket socket) {
  beast::tcp_stream stream(std::move(socket));
  co_await Serve(stream, stream, nullptr);
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  stream.socket().close(ignored);
}

asio::awaitable<void> HttpServer::TlsSession(tcp::socket socket, std::shared_ptr<asio::ssl::context> ctx) {
  if (!ctx) co_return;  // the listener was started without a loaded context: a wiring bug, refused in Listen()
  HttpRequest::TlsStream stream(std::move(socket), *ctx);
  beast::tcp_stream& base = stream.next_layer();
  beast::error_code ec;
  base.expires_after(options_.header_timeout);
  co_await stream.async_handshake(asio::ssl::stream_base::server, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    // Refused versions, unknown client certificates and port scans all end here; debug, not a warning per scan.
    std::string remote;
    auto ep = base.socket().remote_endpoint(ec);
    if (!ec) remote = ep.address().to_string();
    LogDebug("TLS handshake failed", {{"remote", remote}, {"error", ec.message()}});
  } else {
    co_await Serve(stream, base, &stream);
  }
  beast::error_code ignored;
  base.socket().shutdown(tcp::socket::shutdown_both, ignored);
  base.socket().close(ignored);
}

namespace {

bool BypassesInFlightLimit(std::string_view target) {
  return target == "/livez" || target == "/readyz";
}

// Waits for the first byte of the next request for up to `idle`: a keep-alive connection may sit idle that long,
// while the header's own clock (header_timeout) starts only once the client begins a request.
template <class Stream>
asio::awaitable<beast::error_code> AwaitFirstByte(Stream& stream, beast::tcp_stream& base, beast::flat_buffer& buffer,
                                                  std::chrono::milliseconds idle) {
  beast::error_code ec;
  if (buffer.size() > 0) co_return ec;
  base.expires_after(idle);
  size_t n = co_await stream.async_read_some(buffer.prepare(4096), asio::redirect_error(asio::use_awaitable, ec));
  buffer.commit(n);
  co_return ec;
}

// Lingering close, for an answer sent before the request was read to its end: stop sending, then drain what the
// client is still sending for a short while, so it reads our answer instead of a connection reset. (A TLS connection
// cannot half-close below TLS; it only drains.)
template <class Stream>
asio::awaitable<void> LingeringClose(Stream& stream, beast::tcp_stream& base, HttpRequest::TlsStream* tls) {
  beast::error_code ec;
  if (tls == nullptr) base.socket().shutdown(tcp::socket::shutdown_send, ec);
  std::array<char, 64 * 1024> sink;
  base.expires_after(std::chrono::seconds(2));
  uint64_t drained = 0;
  while (drained < 64ull * 1024 * 1024) {
    size_t n = co_await stream.async_read_some(asio::buffer(sink), asio::redirect_error(asio::use_awaitable, ec));
    if (ec) break;
    drained += n;
  }
}

}  // namespace

template <class Stream>
asio::awaitable<void> HttpServer::Serve(Stream& stream, beast::tcp_stream& base, HttpRequest::TlsStream* tls) {
  beast::flat_buffer buffer;
  std::string peer;
  boost::asio::ip::address peer_address;
  {
    beast::error_code ec;
    auto ep = base.socket().remote_endpoint(ec);
    if (!ec) {
      peer_address = ep.address();
      peer = peer_address.to_string();
    }
  }
  const bool from_proxy = !options_.trusted_proxies.empty() && !peer.empty() &&
                          AnyCidrContains(options_.trusted_proxies, peer_address);
  for (;;) {
    HttpRequest::Parser parser;
    parser.header_limit(static_cast<uint32_t>(options_.max_header_bytes));
    // No body limit while reading the header: a Content-Length over the limit must reach the handler, which answers
    // 413 with the limit's config key, instead of failing the read with no answer at all.
    parser.body_limit(boost::none);
    beast::error_code ec = co_await AwaitFirstByte(stream, base, buffer, options_.idle_timeout);
    if (ec) break;
    bool header_timed_out = false;
    base.expires_never();
    {
      ReadDeadline read_deadline(base.socket(), std::chrono::steady_clock::now() + options_.header_timeout);
      co_await http::async_read_header(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
      header_timed_out = ec && read_deadline.Fired();
    }
    if (ec) {
      std::optional<HttpResponse> answer;
      const std::string answer_id = NewRequestId();
      if (ec == http::error::header_limit) {
        answer = ErrorResponse(MakeError(ErrorKind::kTooLarge,
                                         "the request header is larger than " +
                                             std::to_string(options_.max_header_bytes) +
                                             " bytes (server.max_header_bytes)",
                                         "header_too_large"),
                               answer_id);
        answer->status = http::status::request_header_fields_too_large;
      } else if (header_timed_out) {
        // A slow-header client (slowloris): told why, then cut off.
        LogInfo("request header timed out; answered 408 and closed (server.header_timeout)", {{"remote", peer}});
        if (options_.metrics != nullptr) options_.metrics->Add("imgpipe_http_timeouts_total", {{"phase", "header"}});
        answer = ErrorResponse(MakeError(ErrorKind::kInvalidArgument,
                                         "the request header did not arrive within " +
                                             std::to_string(options_.header_timeout.count()) +
                                             " ms (server.header_timeout)",
                                         "timeout"),
                               answer_id);
        answer->status = http::status::request_timeout;
      } else if (ec == http::error::bad_target || ec == http::error::bad_method || ec == http::error::bad_field ||
                 ec == http::error::bad_value || ec == http::error::bad_version ||
                 ec == http::error::bad_line_ending || ec == http::error::bad_content_length) {
        answer = ErrorResponse(MakeError(ErrorKind::kInvalidArgument, "malformed HTTP request: " + ec.message()),
                               answer_id);
      }
      if (answer) {
        answer->SetHeader("X-Request-Id", answer_id);
        base.expires_after(options_.header_timeout);
        ec = co_await WriteResponse(stream, *answer, 11, false, false);
        // The rest of the header may still be on its way: drain it, or the close resets the answer away.
        if (!ec) co_await LingeringClose(stream, base, tls);
      }
      break;
    }
    parser.body_limit(options_.max_body_bytes);
    const auto started = std::chrono::steady_clock::now();
    const auto deadline = started + options_.request_timeout;
    base.expires_at(deadline);  // bounds the handler's writes (100 Continue) until the response's own bound
    std::string request_id = NewRequestId();
    // Behind a trusted load balancer the client is the right-most X-Forwarded-For entry that is not itself a
    // trusted proxy; from anyone else the header is the client's own claim and is ignored.
    std::string remote = peer;
    if (from_proxy) remote = ForwardedClient(parser.get()["X-Forwarded-For"], peer);
    HttpRequest request(tls == nullptr ? &base : nullptr, tls, buffer, parser, request_id, remote, options_.listener,
                        deadline, options_.body_timeout);
    HttpResponse response;
    bool head_only = request.method() == http::verb::head;
    ++inflight_;
    bool slot = false;
    const bool limited = options_.in_flight != nullptr && !BypassesInFlightLimit(request.target());
    if (limited) {
      base.expires_at(deadline);
      slot = co_await options_.in_flight->Acquire(options_.in_flight_wait);
    }
    if (limited && !slot) {
      const int64_t retry = std::max<int64_t>(1, (options_.in_flight_wait.count() + 999) / 1000);
      response = ErrorResponse(MakeError(ErrorKind::kUnavailable,
                                         "the server is at its limit of requests in flight and none finished within " +
                                             std::to_string(options_.in_flight_wait.count()) +
                                             " ms; retry in " + std::to_string(retry) +
                                             " s (limits.max_in_flight, limits.in_flight_wait)",
                                         "overloaded"),
                               request_id);
      response.SetHeader("Retry-After", std::to_string(retry));
      response.route = "overloaded";
    } else {
      try {
        response = co_await handler_(request);
      } catch (const std::exception& e) {
        LogError("handler threw", {{"request_id", request_id}, {"error", e.what()}});
        response = ErrorResponse(MakeError(ErrorKind::kInternal, "internal error; see the server log with this "
                                                                 "request id"),
                                 request_id);
      }
    }
    if (slot) options_.in_flight->Release();
    if (request.BodyTimedOut()) {
      // The client stopped sending its body: 408 whatever the handler made of the read's error; the connection
      // closes after it, since the body is unfinished.
      response.status = http::status::request_timeout;
      if (options_.metrics != nullptr) options_.metrics->Add("imgpipe_http_timeouts_total", {{"phase", "body"}});
    }
    response.SetHeader("X-Request-Id", request_id);
    // A body the handler did not consume means the request stream is out of step: close after answering.
    bool keep_alive = parser.get().keep_alive() && parser.is_done() && !stopping_;
    base.expires_at(deadline);
    ec = co_await WriteResponse(stream, response, parser.get().version(), keep_alive, head_only);
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    if (logger_) logger_(request, response, seconds);
    --inflight_;
    if (ec || !keep_alive) {
      if (!ec && !parser.is_done()) co_await LingeringClose(stream, base, tls);
      break;
    }
  }
}

}  // namespace imgpipe
