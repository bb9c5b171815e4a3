#include "http_client/http_client.hpp"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <atomic>
#include <functional>
#include <thread>

namespace imgpipe {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

// A loopback HTTP/1.1 server whose answers a test scripts: handler(request number, request) -> response, or
// nullopt to keep the connection open without answering (a hung server).
class ScriptedServer {
 public:
  using Handler = std::function<std::optional<http::response<http::string_body>>(
      int, const http::request<http::string_body>&)>;

  explicit ScriptedServer(Handler handler) : handler_(std::move(handler)), acceptor_(ioc_) {
    tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), 0);
    acceptor_.open(ep.protocol());
    acceptor_.bind(ep);
    acceptor_.listen();
    port_ = acceptor_.local_endpoint().port();
    thread_ = std::thread([this] { Loop(); });
  }
  ~ScriptedServer() {
    stop_ = true;
    // A blocking accept() is not woken by close() from another thread; a connection wakes it.
    {
      boost::system::error_code ec;
      asio::io_context ioc;
      tcp::socket s(ioc);
      s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_), ec);
    }
    thread_.join();
    for (auto& t : conn_threads_) t.join();
  }

  HttpEndpoint Endpoint() const { return HttpEndpoint{false, "127.0.0.1", port_, ""}; }
  int requests() const { return requests_; }
  int connections() const { return connections_; }

 private:
  void Loop() {
    while (!stop_) {
      boost::system::error_code ec;
      tcp::socket sock(ioc_);
      acceptor_.accept(sock, ec);
      if (ec || stop_) return;
      ++connections_;
      conn_threads_.emplace_back([this, s = std::move(sock)]() mutable { Serve(std::move(s)); });
    }
  }

  void Serve(tcp::socket sock) {
    beast::flat_buffer buf;
    for (;;) {
      http::request<http::string_body> req;
      boost::system::error_code ec;
      http::read(sock, buf, req, ec);
      if (ec) return;
      int n = requests_++;
      auto res = handler_(n, req);
      if (!res) {
        // Hang until the client gives up (it closes the socket) or the server stops.
        while (!stop_) {
          char c;
          sock.read_some(asio::buffer(&c, 1), ec);
          if (ec) return;
        }
        return;
      }
      res->version(11);
      const bool close = (*res)[http::field::connection] == "close";
      res->keep_alive(req.keep_alive() && !close);
      res->prepare_payload();
      http::write(sock, *res, ec);
      if (ec || !res->keep_alive()) return;
    }
  }

  Handler handler_;
  asio::io_context ioc_;
  tcp::acceptor acceptor_;
  uint16_t port_ = 0;
  std::thread thread_;
  std::vector<std::thread> conn_threads_;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  std::atomic<int> connections_{0};
};

http::response<http::string_body> Reply(int status, std::string body = {}) {
  http::response<http::string_body> r;
  r.result(static_cast<unsigned>(status));
  r.body() = std::move(body);
  return r;
}

HttpClientRequest Req(std::string method, std::string target) {
  HttpClientRequest r;
  r.method = std::move(method);
  r.target = std::move(target);
  return r;
}

HttpClientOptions FastRetries() {
  HttpClientOptions o;
  o.retry.base_delay = std::chrono::milliseconds(1);
  o.retry.max_delay = std::chrono::milliseconds(5);
  return o;
}

TEST(HttpEndpoint, ParsesSchemesPortsAndPaths) {
  auto a = ParseHttpEndpoint("http://127.0.0.1:10000/devstoreaccount1/");
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_FALSE(a->https);
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 10000);
  EXPECT_EQ(a->base_path, "/devstoreaccount1");
  EXPECT_EQ(a->HostHeader(), "127.0.0.1:10000");

  auto b = ParseHttpEndpoint("https://acct.blob.core.windows.net");
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE(b->https);
  EXPECT_EQ(b->port, 443);
  EXPECT_EQ(b->HostHeader(), "acct.blob.core.windows.net");

  auto c = ParseHttpEndpoint("http://[::1]:9000");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->host, "::1");
  EXPECT_EQ(c->HostHeader(), "[::1]:9000");
}

TEST(HttpEndpoint, RefusesWhatItCannotUse) {
  for (const char* bad : {"ftp://x", "http://", "http://h:0", "http://h:99999", "http://h:ab", "http://u:p@h",
                          "http://h/?sig=1", "http://[::1"}) {
    auto r = ParseHttpEndpoint(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
  }
}

TEST(HttpStatus, MapsToErrorKinds) {
  EXPECT_EQ(HttpStatusErrorKind(404), ErrorKind::kNotFound);
  EXPECT_EQ(HttpStatusErrorKind(412), ErrorKind::kConflict);
  EXPECT_EQ(HttpStatusErrorKind(409), ErrorKind::kConflict);
  EXPECT_EQ(HttpStatusErrorKind(403), ErrorKind::kPermissionDenied);
  EXPECT_EQ(HttpStatusErrorKind(416), ErrorKind::kRangeNotSatisfiable);
  EXPECT_EQ(HttpStatusErrorKind(503), ErrorKind::kUnavailable);
  EXPECT_EQ(HttpStatusErrorKind(429), ErrorKind::kUnavailable);
  EXPECT_EQ(HttpStatusErrorKind(400), ErrorKind::kInternal);
  Error e = HttpStatusError("put originals/a", "S3", 503, "SlowDown", "Please reduce your request rate.");
  EXPECT_EQ(e.kind, ErrorKind::kUnavailable);
  EXPECT_EQ(e.message, "put originals/a: S3 answered 503 SlowDown: Please reduce your request rate.");
}

TEST(HttpDate, FormatsAndParsesImfFixdate) {
  TimePoint t;
  ASSERT_TRUE(ParseHttpDate("Fri, 26 Jun 2015 23:39:12 GMT", &t));
  EXPECT_EQ(FormatHttpDate(t), "Fri, 26 Jun 2015 23:39:12 GMT");
  EXPECT_FALSE(ParseHttpDate("Fri, 31 Jun 2015 23:39:12 GMT", &t));
  EXPECT_FALSE(ParseHttpDate("2015-06-26T23:39:12Z", &t));
  EXPECT_FALSE(ParseHttpDate("Fri, 26 Jun 9999 23:39:12 GMT", &t)) << "past what a TimePoint holds";
}

TEST(UriEncode, KeepsOnlyUnreserved) {
  EXPECT_EQ(UriEncode("a b/c~d*e", false), "a%20b%2Fc~d%2Ae");
  EXPECT_EQ(UriEncode("a b/c", true), "a%20b/c");
}

TEST(HttpClient, RetriesIdempotentRequestsOn503) {
  ScriptedServer server([](int n, const auto&) { return Reply(n < 2 ? 503 : 200, n < 2 ? "busy" : "ok"); });
  auto client = HttpClient::Create(server.Endpoint(), FastRetries());
  ASSERT_TRUE(client.ok());
  int signed_times = 0;
  auto r = (*client)->Send(Req("GET", "/x"), [&](HttpClientRequest&) {
    ++signed_times;
    return Ok();
  });
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->head.status, 200);
  EXPECT_EQ(r->body, "ok");
  EXPECT_EQ(server.requests(), 3);
  EXPECT_EQ(signed_times, 3);  // every attempt is signed afresh
}

TEST(HttpClient, GivesUpAfterMaxAttemptsWithTheLastStatus) {
  ScriptedServer server([](int, const auto&) { return Reply(503, "busy"); });
  auto opts = FastRetries();
  opts.retry.max_attempts = 3;
  auto client = HttpClient::Create(server.Endpoint(), opts);
  auto r = (*client)->Send(Req("GET", "/x"), {});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->head.status, 503);
  EXPECT_EQ(server.requests(), 3);
}

TEST(HttpClient, DoesNotRetryNonIdempotentRequests) {
  ScriptedServer server([](int, const auto&) { return Reply(500); });
  auto client = HttpClient::Create(server.Endpoint(), FastRetries());
  HttpClientRequest req = Req("POST", "/x");
  req.idempotent = false;
  auto r = (*client)->Send(req, {});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->head.status, 500);
  EXPECT_EQ(server.requests(), 1);
}

TEST(HttpClient, ReusesKeepAliveConnections) {
  ScriptedServer server([](int, const auto& req) { return Reply(200, std::string(req.body())); });
  auto client = HttpClient::Create(server.Endpoint(), FastRetries());
  for (int i = 0; i < 5; ++i) {
    HttpClientRequest req = Req("PUT", "/x");
    std::string body = "body" + std::to_string(i);
    req.body = body;
    auto r = (*client)->Send(req, {});
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->body, body);
  }
  EXPECT_EQ((*client)->connections_opened(), 1u);
  EXPECT_EQ(server.connections(), 1);
}

TEST(HttpClient, StreamsALargeBodyInPieces) {
  const std::string big(8 << 20, 'z');
  ScriptedServer server([&](int, const auto&) { return Reply(200, big); });
  auto client = HttpClient::Create(server.Endpoint(), FastRetries());
  auto stream = (*client)->Open(Req("GET", "/big"), {});
  ASSERT_TRUE(stream.ok());
  EXPECT_EQ((*stream)->Head().content_length, big.size());
  char buf[65536];
  size_t total = 0, reads = 0;
  for (;;) {
    auto n = (*stream)->Read(std::span<char>(buf, sizeof buf));
    ASSERT_TRUE(n.ok());
    if (*n == 0) break;
    ASSERT_LE(*n, sizeof buf);
    total += *n;
    ++reads;
  }
  EXPECT_EQ(total, big.size());
  EXPECT_GE(reads, big.size() / sizeof buf);
}

TEST(HttpClient, ErrorBodyWithConnectionCloseIsReadWhole) {
  ScriptedServer server([](int, const auto&) {
    auto r = Reply(409, "<Error><Code>BucketAlreadyOwnedByYou</Code></Error>");
    r.set(http::field::connection, "close");
    return r;
  });
  auto client = HttpClient::Create(server.Endpoint(), FastRetries());
  for (int i = 0; i < 3; ++i) {
    auto r = (*client)->Send(Req("PUT", "/b"), {});
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->head.status, 409);
    EXPECT_EQ(r->body, "<Error><Code>BucketAlreadyOwnedByYou</Code></Error>");
  }
  EXPECT_EQ((*client)->connections_opened(), 3u);  // a closed connection is never reused
}

TEST(HttpClient, BodyOverTheCapIsTooLarge) {
  ScriptedServer server([](int, const auto&) { return Reply(200, std::string(4096, 'x')); });
  auto client = HttpClient::Create(server.Endpoint(), FastRetries());
  auto r = (*client)->Send(Req("GET", "/x"), {}, 1024);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kTooLarge);
}

TEST(HttpClient, ASilentServerTimesOutAsUnavailable) {
  ScriptedServer server([](int, const auto&) { return std::nullopt; });
  HttpClientOptions opts = FastRetries();
  opts.io_timeout = std::chrono::milliseconds(200);
  opts.retry.max_attempts = 2;
  auto client = HttpClient::Create(server.Endpoint(), opts);
  auto r = (*client)->Send(Req("GET", "/x"), {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kUnavailable);
  EXPECT_NE(r.error().message.find("timed out"), std::string::npos) << r.error().message;
  EXPECT_EQ(server.requests(), 2);  // a timeout is retried like a 503
}

TEST(HttpClient, RefusedConnectionIsUnavailable) {
  uint16_t port;
  {
    asio::io_context ioc;
    tcp::acceptor a(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    port = a.local_endpoint().port();
  }
  auto client = HttpClient::Create(HttpEndpoint{false, "127.0.0.1", port, ""}, FastRetries());
  auto r = (*client)->Send(Req("GET", "/x"), {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kUnavailable);
  EXPECT_NE(r.error().message.find("cannot connect to http://127.0.0.1:"), std::string::npos) << r.error().message;
}

}  // namespace
}  // namespace imgpipe
