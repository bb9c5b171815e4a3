#include "http_client/http_client.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <random>
#include <thread>

namespace imgpipe {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

bool IEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

Error EndpointError(std::string_view url, std::string_view what) {
  return MakeError(ErrorKind::kInvalidArgument,
                   "invalid endpoint URL \"" + std::string(url) + "\": " + std::string(what) +
                       "; expected http://host[:port][/path] or https://...");
}

// Body bytes read per step while draining a response that is thrown away (a retried 503's body).
constexpr size_t kDrainChunk = 16 * 1024;

}  // namespace

std::string HttpEndpoint::HostHeader() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  if ((https && port != 443) || (!https && port != 80)) h += ":" + std::to_string(port);
  return h;
}

Result<HttpEndpoint> ParseHttpEndpoint(std::string_view url) {
  HttpEndpoint ep;
  std::string_view rest;
  if (url.starts_with("http://")) {
    rest = url.substr(7);
  } else if (url.starts_with("https://")) {
    ep.https = true;
    rest = url.substr(8);
  } else {
    return EndpointError(url, "the scheme must be http or https");
  }
  if (rest.find_first_of("?#@") != std::string_view::npos) {
    return EndpointError(url, "no query, fragment or user info allowed");
  }
  size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash);
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  ep.base_path = std::string(path);
  std::string_view port_text;
  if (authority.starts_with("[")) {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return EndpointError(url, "unclosed '[' in the host");
    ep.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return EndpointError(url, "unexpected text after the IPv6 address");
      port_text = after.substr(1);
    }
  } else {
    size_t colon = authority.rfind(':');
    ep.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port_text = authority.substr(colon + 1);
  }
  if (ep.host.empty()) return EndpointError(url, "the host is empty");
  if (port_text.empty()) {
    ep.port = ep.https ? 443 : 80;
  } else {
    unsigned value = 0;
    for (char c : port_text) {
      if (c < '0' || c > '9' || value > 65535) return EndpointError(url, "the port is not a number");
      value = value * 10 + static_cast<unsigned>(c - '0');
    }
    if (value == 0 || value > 65535) return EndpointError(url, "the port is out of range");
    ep.port = static_cast<uint16_t>(value);
  }
  return ep;
}

std::optional<std::string_view> FindHeader(const HttpHeaders& headers, std::string_view name) {
  for (const auto& [k, v] : headers) {
    if (IEquals(k, name)) return std::string_view(v);
  }
  return std::nullopt;
}

bool IsRetryableHttpStatus(int status) {
  return status == 408 || status == 429 || status == 500 || status == 502 || status == 503 || status == 504;
}

ErrorKind HttpStatusErrorKind(int status) {
  switch (status) {
    case 404: return ErrorKind::kNotFound;
    case 409:
    case 412: return ErrorKind::kConflict;
    case 401:
    case 403: return ErrorKind::kPermissionDenied;
    case 413: return ErrorKind::kTooLarge;
    case 416: return ErrorKind::kRangeNotSatisfiable;
    case 408:
    case 429: return ErrorKind::kUnavailable;
    default: return status >= 500 ? ErrorKind::kUnavailable : ErrorKind::kInternal;
  }
}

Error HttpStatusError(std::string_view what, std::string_view service, int status, std::string_view code,
                      std::string_view message) {
  std::string text = std::string(what) + ": " + std::string(service) + " answered " + std::to_string(status);
  if (!code.empty()) text += " " + std::string(code);
  if (!message.empty()) text += ": " + std::string(message.substr(0, 300));
  if (status == 403 || status == 401) text += " (check the storage credentials in the config)";
  return MakeError(HttpStatusErrorKind(status), std::move(text), status >= 500 || status == 429 ? "storage_unavailable" : "");
}

std::string FormatHttpDate(TimePoint t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return buf;
}

bool ParseHttpDate(std::string_view text, TimePoint* out) {
  static constexpr std::string_view kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  // "Sun, 06 Nov 1994 08:49:37 GMT": fixed width, 29 bytes.
  if (text.size() != 29 || text.substr(3, 2) != ", " || text.substr(25) != " GMT") return false;
  auto num = [&](size_t at, size_t n, int* v) {
    *v = 0;
    for (size_t i = at; i < at + n; ++i) {
      if (text[i] < '0' || text[i] > '9') return false;
      *v = *v * 10 + (text[i] - '0');
    }
    return true;
  };
  int day, year, hh, mm, ss, month = -1;
  for (int i = 0; i < 12; ++i) {
    if (text.substr(8, 3) == kMonths[i]) month = i;
  }
  if (month < 0 || !num(5, 2, &day) || !num(12, 4, &year) || !num(17, 2, &hh) || !num(20, 2, &mm) ||
      !num(23, 2, &ss) || text[16] != ' ' || text[19] != ':' || text[22] != ':') {
    return false;
  }
  if (day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60) return false;
  // A TimePoint (64-bit nanoseconds) holds about 1678 to 2261; a later year overflowed it (fuzz_storage_xml, UBSan).
  if (year < 1678 || year > 2261) return false;
  using namespace std::chrono;
  year_month_day ymd{std::chrono::year(year), std::chrono::month(static_cast<unsigned>(month + 1)),
                     std::chrono::day(static_cast<unsigned>(day))};
  if (!ymd.ok()) return false;
  *out = sys_days(ymd) + hours(hh) + minutes(mm) + seconds(ss);
  return true;
}

std::string UriEncode(std::string_view s, bool keep_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
        c == '.' || c == '~' || (keep_slash && c == '/')) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  return out;
}

std::string UriDecode(std::string_view s) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out += static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::string AsciiLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Connection: one TCP (or TLS) connection with its own io_context. Every operation is an async one run to
// completion on that context, because Beast's timeouts (tcp_stream::expires_after) only apply to async operations.

class HttpClient::Connection {
 public:
  Connection(bool https, asio::ssl::context* ctx) {
    if (https) {
      tls_.emplace(ioc_, *ctx);
    } else {
      plain_.emplace(ioc_);
    }
  }

  beast::tcp_stream& Lowest() { return tls_ ? beast::get_lowest_layer(*tls_) : *plain_; }

  boost::system::error_code Connect(const HttpEndpoint& ep, const std::string& connect_host,
                                    std::chrono::milliseconds connect_timeout, std::chrono::milliseconds io_timeout) {
    boost::system::error_code ec;
    tcp::resolver resolver(ioc_);
    auto results = resolver.resolve(connect_host.empty() ? ep.host : connect_host, std::to_string(ep.port), ec);
    if (ec) return ec;
    Lowest().expires_after(connect_timeout);
    Lowest().async_connect(results, [&](const boost::system::error_code& e, const tcp::endpoint&) { ec = e; });
    RunToCompletion();
    if (ec) return ec;
    Lowest().socket().set_option(tcp::no_delay(true), ec);
    if (tls_) {
      // SNI, and the certificate's name must match the host we asked for.
      if (!SSL_set_tlsext_host_name(tls_->native_handle(), ep.host.c_str())) {
        return boost::system::error_code(static_cast<int>(::ERR_get_error()), asio::error::get_ssl_category());
      }
      tls_->set_verify_callback(asio::ssl::host_name_verification(ep.host));
      Lowest().expires_after(io_timeout);
      tls_->async_handshake(asio::ssl::stream_base::client, [&](const boost::system::error_code& e) { ec = e; });
      RunToCompletion();
    }
    return ec;
  }

  template <class Message>
  boost::system::error_code Write(Message& msg, std::chrono::milliseconds timeout) {
    boost::system::error_code ec;
    Lowest().expires_after(timeout);
    auto done = [&](const boost::system::error_code& e, size_t) { ec = e; };
    if (tls_) {
      http::async_write(*tls_, msg, done);
    } else {
      http::async_write(*plain_, msg, done);
    }
    RunToCompletion();
    return ec;
  }

  boost::system::error_code ReadHeader(http::response_parser<http::buffer_body>& parser,
                                       std::chrono::milliseconds timeout) {
    boost::system::error_code ec;
    Lowest().expires_after(timeout);
    auto done = [&](const boost::system::error_code& e, size_t) { ec = e; };
    if (tls_) {
      http::async_read_header(*tls_, buffer_, parser, done);
    } else {
      http::async_read_header(*plain_, buffer_, parser, done);
    }
    RunToCompletion();
    return ec;
  }

  //! Reads body bytes into `buf`; returns how many. need_buffer (buf full) is not an error.
  Result<size_t> ReadBody(http::response_parser<http::buffer_body>& parser, std::span<char> buf,
                          std::chrono::milliseconds timeout, boost::system::error_code* ec_out) {
    auto& body = parser.get().body();
    body.data = buf.data();
    body.size = buf.size();
    boost::system::error_code ec;
    Lowest().expires_after(timeout);
    auto done = [&](const boost::system::error_code& e, size_t) { ec = e; };
    if (tls_) {
      http::async_read(*tls_, buffer_, parser, done);
    } else {
      http::async_read(*plain_, buffer_, parser, done);
    }
    RunToCompletion();
    if (ec == http::error::need_buffer) ec = {};
    *ec_out = ec;
    return buf.size() - body.size;
  }

  //! Reads body bytes past the parser: first what it read ahead, then from the socket. Returns 0 only on error or
  //! when the peer closed the connection.
  size_t ReadRaw(std::span<char> buf, std::chrono::milliseconds timeout, boost::system::error_code* ec_out) {
    if (buffer_.size() > 0) {
      size_t n = asio::buffer_copy(asio::buffer(buf.data(), buf.size()), buffer_.data());
      buffer_.consume(n);
      return n;
    }
    boost::system::error_code ec;
    size_t n = 0;
    Lowest().expires_after(timeout);
    auto done = [&](const boost::system::error_code& e, size_t got) {
      ec = e;
      n = got;
    };
    if (tls_) {
      tls_->async_read_some(asio::buffer(buf.data(), buf.size()), done);
    } else {
      plain_->async_read_some(asio::buffer(buf.data(), buf.size()), done);
    }
    RunToCompletion();
    *ec_out = ec;
    return n;
  }

  bool reused = false;

 private:
  void RunToCompletion() {
    ioc_.restart();
    ioc_.run();
  }

  asio::io_context ioc_{1};
  std::optional<beast::tcp_stream> plain_;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls_;
  beast::flat_buffer buffer_;
};

// ---------------------------------------------------------------------------------------------------------------

class HttpClient::Stream final : public HttpClientStream {
 public:
  Stream(HttpClient* client, std::unique_ptr<Connection> conn,
         std::unique_ptr<http::response_parser<http::buffer_body>> parser, HttpClientResponseHead head)
      : client_(client), conn_(std::move(conn)), parser_(std::move(parser)), head_(std::move(head)) {
    if (parser_->is_done()) {
      Finish();
    } else if (!parser_->chunked() && parser_->content_length()) {
      // A body of known length is read straight into the caller's buffer: the parser would copy it through its
      // own buffer 64 KiB at a time, which costs more than the network on a fast link.
      raw_remaining_ = *parser_->content_length();
    }
  }

  ~Stream() override = default;  // a connection still held here was not read to the end: it is closed

  const HttpClientResponseHead& Head() const override { return head_; }

  Result<size_t> Read(std::span<char> buf) override {
    if (!conn_ || buf.empty()) return size_t{0};
    if (raw_remaining_) {
      boost::system::error_code ec;
      size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), *raw_remaining_));
      size_t n = conn_->ReadRaw(buf.first(want), client_->options_.io_timeout, &ec);
      if (ec || n == 0) {
        conn_.reset();
        return MakeError(ErrorKind::kUnavailable,
                         "reading the response body from " + client_->endpoint_.HostHeader() + " failed: " +
                             (ec ? ec.message() : std::string("the connection closed early")),
                         "storage_unavailable");
      }
      *raw_remaining_ -= n;
      if (*raw_remaining_ == 0) Finish();
      return n;
    }
    while (true) {
      boost::system::error_code ec;
      IMGPIPE_ASSIGN_OR_RETURN(size_t n, conn_->ReadBody(*parser_, buf, client_->options_.io_timeout, &ec));
      if (ec) {
        conn_.reset();
        return MakeError(ErrorKind::kUnavailable, "reading the response body from " +
                                                      client_->endpoint_.HostHeader() + " failed: " + ec.message(),
                         "storage_unavailable");
      }
      if (parser_->is_done()) Finish();
      if (n > 0 || !conn_) return n;
    }
  }

 private:
  void Finish() {
    if (parser_->keep_alive()) client_->GiveBack(std::move(conn_));
    conn_.reset();
  }

  HttpClient* client_;
  std::unique_ptr<Connection> conn_;
  std::unique_ptr<http::response_parser<http::buffer_body>> parser_;
  HttpClientResponseHead head_;
  std::optional<uint64_t> raw_remaining_;  // set when the body is read past the parser
};

Result<std::string> HttpClientStream::ReadAll(size_t max_bytes) {
  std::string out;
  char buf[16 * 1024];
  for (;;) {
    IMGPIPE_ASSIGN_OR_RETURN(size_t n, Read(std::span<char>(buf, sizeof buf)));
    if (n == 0) return out;
    if (out.size() + n > max_bytes) {
      return MakeError(ErrorKind::kTooLarge, "response body over " + std::to_string(max_bytes) + " bytes");
    }
    out.append(buf, n);
  }
}

// ---------------------------------------------------------------------------------------------------------------

Result<std::unique_ptr<HttpClient>> HttpClient::Create(HttpEndpoint endpoint, HttpClientOptions options) {
  asio::ssl::context* ctx = nullptr;
  if (endpoint.https) {
    auto owned = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
    boost::system::error_code ec;
    owned->set_default_verify_paths(ec);
    if (!ec && !options.ca_file.empty()) owned->load_verify_file(options.ca_file, ec);
    if (ec) {
      return MakeError(ErrorKind::kInvalidArgument, "cannot set up TLS for " + endpoint.HostHeader() +
                                                        ": " + ec.message() + " (check the CA file)");
    }
    owned->set_verify_mode(asio::ssl::verify_peer);
    ctx = owned.release();
  }
  return std::unique_ptr<HttpClient>(new HttpClient(std::move(endpoint), options, ctx));
}

HttpClient::HttpClient(HttpEndpoint endpoint, HttpClientOptions options, void* ssl_ctx)
    : endpoint_(std::move(endpoint)), options_(options), ssl_ctx_(ssl_ctx) {}

HttpClient::~HttpClient() {
  idle_.clear();
  delete static_cast<asio::ssl::context*>(ssl_ctx_);
}

uint64_t HttpClient::connections_opened() const {
  std::lock_guard lock(mu_);
  return opened_;
}

Result<std::unique_ptr<HttpClient::Connection>> HttpClient::Connect() {
  auto conn = std::make_unique<Connection>(endpoint_.https, static_cast<asio::ssl::context*>(ssl_ctx_));
  if (auto ec = conn->Connect(endpoint_, options_.connect_host, options_.connect_timeout, options_.io_timeout)) {
    return MakeError(ErrorKind::kUnavailable,
                     "cannot connect to " + std::string(endpoint_.https ? "https://" : "http://") +
                         endpoint_.HostHeader() + ": " + ec.message(),
                     "storage_unavailable");
  }
  std::lock_guard lock(mu_);
  ++opened_;
  return conn;
}

std::unique_ptr<HttpClient::Connection> HttpClient::TakeIdle() {
  std::lock_guard lock(mu_);
  if (idle_.empty()) return nullptr;
  auto c = std::move(idle_.back());
  idle_.pop_back();
  c->reused = true;
  return c;
}

void HttpClient::GiveBack(std::unique_ptr<Connection> c) {
  if (!c) return;
  std::lock_guard lock(mu_);
  if (idle_.size() < options_.max_idle_connections) idle_.push_back(std::move(c));
}

std::chrono::milliseconds HttpClient::BackoffDelay(int attempt) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  int64_t cap = options_.retry.base_delay.count() << std::min(attempt, 20);
  cap = std::min<int64_t>(cap, options_.retry.max_delay.count());
  std::uniform_int_distribution<int64_t> dist(0, std::max<int64_t>(cap, 0));
  return std::chrono::milliseconds(dist(rng));
}

Result<std::unique_ptr<HttpClientStream>> HttpClient::OpenOnce(HttpClientRequest& request, bool* retryable_failure) {
  *retryable_failure = false;
  // A pooled connection may have been closed by the server while idle; that shows up as an error before the first
  // response byte, and then the request is sent once more on a fresh connection whatever its idempotency.
  for (int fresh_try = 0; fresh_try < 2; ++fresh_try) {
    std::unique_ptr<Connection> conn = fresh_try == 0 ? TakeIdle() : nullptr;
    if (!conn) {
      auto c = Connect();
      if (!c.ok()) {
        *retryable_failure = true;
        return c.error();
      }
      conn = std::move(c).value();
    }

    http::request<http::span_body<const char>> req;
    req.method_string(request.method);
    req.target(request.target);
    req.version(11);
    req.set(http::field::host, endpoint_.HostHeader());
    for (const auto& [k, v] : request.headers) req.set(k, v);
    req.body() = std::span<const char>(request.body.data(), request.body.size());
    req.prepare_payload();
    req.keep_alive(true);

    auto parser = std::make_unique<http::response_parser<http::buffer_body>>();
    parser->body_limit(boost::none);  // the caller bounds what it reads
    parser->header_limit(64 * 1024);
    if (request.method == "HEAD") parser->skip(true);

    boost::system::error_code ec = conn->Write(req, options_.io_timeout);
    if (!ec) ec = conn->ReadHeader(*parser, options_.io_timeout);
    if (ec) {
      const bool stale = conn->reused && (ec == http::error::end_of_stream || ec == asio::error::eof ||
                                          ec == asio::error::connection_reset || ec == asio::error::broken_pipe);
      if (stale && fresh_try == 0) continue;
      *retryable_failure = true;
      return MakeError(ErrorKind::kUnavailable,
                       request.method + " " + endpoint_.HostHeader() + ": " +
                           (ec == beast::error::timeout ? std::string("timed out after ") +
                                                              std::to_string(options_.io_timeout.count()) + " ms"
                                                        : ec.message()),
                       "storage_unavailable");
    }
    HttpClientResponseHead head;
    const auto& msg = parser->get();
    head.status = static_cast<int>(msg.result_int());
    for (const auto& field : msg) head.headers.emplace_back(field.name_string(), field.value());
    if (auto len = parser->content_length()) head.content_length = *len;
    return std::unique_ptr<HttpClientStream>(new Stream(this, std::move(conn), std::move(parser), std::move(head)));
  }
  return MakeError(ErrorKind::kInternal, "unreachable");
}

Result<std::unique_ptr<HttpClientStream>> HttpClient::Open(HttpClientRequest request, const HttpSigner& sign) {
  const int attempts = request.idempotent ? std::max(1, options_.retry.max_attempts) : 1;
  for (int attempt = 0;; ++attempt) {
    HttpClientRequest signed_request = request;
    if (sign) IMGPIPE_TRY(sign(signed_request));
    bool retryable = false;
    auto stream = OpenOnce(signed_request, &retryable);
    const bool last = attempt + 1 >= attempts;
    if (stream.ok()) {
      if (last || !IsRetryableHttpStatus((*stream)->Head().status)) return stream;
      // Drain a small error body so the connection can be reused; a large one is simply dropped with it.
      char buf[kDrainChunk];
      for (int i = 0; i < 4; ++i) {
        auto n = (*stream)->Read(std::span<char>(buf, sizeof buf));
        if (!n.ok() || *n == 0) break;
      }
    } else if (!retryable || last) {
      return stream.error();
    }
    std::this_thread::sleep_for(BackoffDelay(attempt));
  }
}

Result<HttpClientResponse> HttpClient::Send(HttpClientRequest request, const HttpSigner& sign, size_t max_body) {
  IMGPIPE_ASSIGN_OR_RETURN(auto stream, Open(std::move(request), sign));
  HttpClientResponse out;
  out.head = stream->Head();
  IMGPIPE_ASSIGN_OR_RETURN(out.body, stream->ReadAll(max_body));
  return out;
}

}  // namespace imgpipe
