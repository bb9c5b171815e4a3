// HTTPS: the client verifies the server's certificate chain and name. The server here is an in-process TLS server
// with a self-signed certificate for "localhost" made by the test.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "http_client/http_client.hpp"

namespace imgpipe {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

struct Pem {
  std::string cert, key;
};

// A self-signed P-256 certificate valid for DNS:localhost only (not for the IP 127.0.0.1).
Pem MakeCertificate() {
  EVP_PKEY* pkey = EVP_EC_gen("P-256");
  X509* x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_set_pubkey(x, pkey);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("localhost"), -1, -1,
                             0);
  X509_set_issuer_name(x, name);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, x, x, nullptr, nullptr, 0);
  for (auto [nid, value] : {std::pair{NID_subject_alt_name, "DNS:localhost"},
                            std::pair{NID_basic_constraints, "critical,CA:TRUE"}}) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
  }
  X509_sign(x, pkey, EVP_sha256());
  auto to_string = [](auto write) {
    BIO* bio = BIO_new(BIO_s_mem());
    write(bio);
    char* data = nullptr;
    long n = BIO_get_mem_data(bio, &data);
    std::string out(data, static_cast<size_t>(n));
    BIO_free(bio);
    return out;
  };
  Pem pem{to_string([&](BIO* b) { PEM_write_bio_X509(b, x); }),
          to_string([&](BIO* b) { PEM_write_bio_PrivateKey(b, pkey, nullptr, nullptr, 0, nullptr, nullptr); })};
  X509_free(x);
  EVP_PKEY_free(pkey);
  return pem;
}

class TlsServer {
 public:
  explicit TlsServer(const Pem& pem) : ctx_(asio::ssl::context::tls_server), acceptor_(ioc_) {
    ctx_.use_certificate_chain(asio::buffer(pem.cert));
    ctx_.use_private_key(asio::buffer(pem.key), asio::ssl::context::pem);
    tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), 0);
    acceptor_.open(ep.protocol());
    acceptor_.bind(ep);
    acceptor_.listen();
    port_ = acceptor_.local_endpoint().port();
    thread_ = std::thread([this] { Loop(); });
  }
  ~TlsServer() {
    stop_ = true;
    boost::system::error_code ec;
    tcp::socket s(ioc_);
    s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_), ec);  // wakes accept()
    thread_.join();
  }
  uint16_t port() const { return port_; }
  int served() const { return served_; }

 private:
  void Loop() {
    while (!stop_) {
      tcp::socket sock(ioc_);
      boost::system::error_code ec;
      acceptor_.accept(sock, ec);
      if (ec || stop_) return;
      asio::ssl::stream<tcp::socket> tls(std::move(sock), ctx_);
      tls.handshake(asio::ssl::stream_base::server, ec);
      if (ec) continue;  // the client refused our certificate
      beast::flat_buffer buf;
      http::request<http::string_body> req;
      http::read(tls, buf, req, ec);
      if (ec) continue;
      http::response<http::string_body> res{http::status::ok, 11};
      res.body() = "secure";
      res.keep_alive(false);
      res.prepare_payload();
      http::write(tls, res, ec);
      ++served_;
      tls.shutdown(ec);
    }
  }

  asio::io_context ioc_;
  asio::ssl::context ctx_;
  tcp::acceptor acceptor_;
  uint16_t port_ = 0;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int> served_{0};
};

class HttpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pem_ = MakeCertificate();
    ca_file_ = std::filesystem::temp_directory_path() / ("imgpipe-tls-test-" + std::to_string(::getpid()) + ".pem");
    std::ofstream(ca_file_) << pem_.cert;
    server_ = std::make_unique<TlsServer>(pem_);
  }
  void TearDown() override {
    server_.reset();
    std::filesystem::remove(ca_file_);
  }

  Result<HttpClientResponse> Get(const std::string& host, const std::string& ca_file) {
    HttpClientOptions o;
    o.ca_file = ca_file;
    o.retry.max_attempts = 1;
    auto client = HttpClient::Create(HttpEndpoint{true, host, server_->port(), ""}, o);
    if (!client.ok()) return client.error();
    HttpClientRequest req;
    req.target = "/";
    return (*client)->Send(req, {});
  }

  Pem pem_;
  std::filesystem::path ca_file_;
  std::unique_ptr<TlsServer> server_;
};

TEST_F(HttpsTest, TrustedCertificateForTheRightNameIsAccepted) {
  auto r = Get("localhost", ca_file_.string());
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->head.status, 200);
  EXPECT_EQ(r->body, "secure");
}

TEST_F(HttpsTest, UnknownIssuerIsRefused) {
  auto r = Get("localhost", "");  // the system's CA store does not know our certificate
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kUnavailable);
  EXPECT_NE(r.error().message.find("certificate verify failed"), std::string::npos) << r.error().message;
  EXPECT_EQ(server_->served(), 0);
}

TEST_F(HttpsTest, CertificateForAnotherNameIsRefused) {
  auto r = Get("127.0.0.1", ca_file_.string());  // trusted, but issued for localhost only
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kUnavailable);
  EXPECT_EQ(server_->served(), 0);
}

TEST_F(HttpsTest, UnreadableCaFileIsAConfigurationError) {
  HttpClientOptions o;
  o.ca_file = "/nonexistent/ca.pem";
  auto client = HttpClient::Create(HttpEndpoint{true, "localhost", server_->port(), ""}, o);
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.error().kind, ErrorKind::kInvalidArgument);
}

}  // namespace
}  // namespace imgpipe
