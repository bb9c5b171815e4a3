#include "http/tls_context.hpp"

#include <boost/asio/ssl/context.hpp>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cstdio>
#include <filesystem>

namespace imgpipe {
namespace {

namespace fs = std::filesystem;

// A self-signed certificate and its key, written as PEM files into `dir` as <name>.crt and <name>.key.
void WriteSelfSigned(const fs::path& dir, const std::string& name) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  ASSERT_NE(key, nullptr);
  X509* cert = X509_new();
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), 0);
  X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
  X509_set_pubkey(cert, key);
  X509_NAME* subject = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(name.c_str()), -1,
                             -1, 0);
  X509_set_issuer_name(cert, subject);
  ASSERT_GT(X509_sign(cert, key, EVP_sha256()), 0);
  FILE* f = std::fopen((dir / (name + ".crt")).c_str(), "w");
  PEM_write_X509(f, cert);
  std::fclose(f);
  f = std::fopen((dir / (name + ".key")).c_str(), "w");
  PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(f);
  X509_free(cert);
  EVP_PKEY_free(key);
}

TlsSettings Settings(std::string cert, std::string key, std::string ca = {}, ClientAuth auth = ClientAuth::kNone,
                     std::string prefix = "server") {
  TlsSettings s;
  s.cert_file = std::move(cert);
  s.key_file = std::move(key);
  s.client_ca_file = std::move(ca);
  s.client_auth = auth;
  s.config_prefix = std::move(prefix);
  return s;
}

class TlsContextTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("imgpipe-tls-test-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    WriteSelfSigned(dir_, "a");
    WriteSelfSigned(dir_, "b");
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string P(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

TEST_F(TlsContextTest, LoadsAPairAndKeepsTls12AsTheFloor) {
  auto ctx = MakeServerTlsContext(Settings(P("a.crt"), P("a.key")));
  ASSERT_TRUE(ctx.ok()) << ctx.error().message;
  EXPECT_EQ(SSL_CTX_get_min_proto_version((*ctx)->native_handle()), TLS1_2_VERSION);
  EXPECT_EQ(SSL_CTX_get_verify_mode((*ctx)->native_handle()), SSL_VERIFY_NONE);
}

TEST_F(TlsContextTest, ClientAuthModesSetTheVerifyMode) {
  auto required = MakeServerTlsContext(Settings(P("a.crt"), P("a.key"), P("b.crt"), ClientAuth::kRequired));
  ASSERT_TRUE(required.ok()) << required.error().message;
  EXPECT_EQ(SSL_CTX_get_verify_mode((*required)->native_handle()), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
  auto optional = MakeServerTlsContext(Settings(P("a.crt"), P("a.key"), P("b.crt"), ClientAuth::kOptional));
  ASSERT_TRUE(optional.ok()) << optional.error().message;
  EXPECT_EQ(SSL_CTX_get_verify_mode((*optional)->native_handle()), SSL_VERIFY_PEER);
}

TEST_F(TlsContextTest, ErrorsNameTheConfigKey) {
  auto missing = MakeServerTlsContext(Settings(P("nope.crt"), P("a.key"), "", ClientAuth::kNone, "admin"));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("admin.tls_cert"), std::string::npos) << missing.error().message;
  auto mismatch = MakeServerTlsContext(Settings(P("a.crt"), P("b.key")));
  ASSERT_FALSE(mismatch.ok());
  EXPECT_NE(mismatch.error().message.find("server.tls_key"), std::string::npos) << mismatch.error().message;
  EXPECT_NE(mismatch.error().message.find("mismatch"), std::string::npos) << mismatch.error().message;
  auto not_pem = MakeServerTlsContext(Settings(P("a.key"), P("a.key")));
  ASSERT_FALSE(not_pem.ok());
  EXPECT_NE(not_pem.error().message.find("server.tls_cert"), std::string::npos) << not_pem.error().message;
  auto bad_ca = MakeServerTlsContext(Settings(P("a.crt"), P("a.key"), P("a.key"), ClientAuth::kRequired));
  ASSERT_FALSE(bad_ca.ok());
  EXPECT_NE(bad_ca.error().message.find("server.tls_client_ca"), std::string::npos) << bad_ca.error().message;
}

TEST_F(TlsContextTest, AFailedReloadKeepsTheCurrentContext) {
  TlsContextHolder holder(Settings(P("a.crt"), P("a.key")));
  ASSERT_TRUE(holder.Load().ok());
  auto before = holder.Current();
  fs::remove(dir_ / "a.crt");
  EXPECT_FALSE(holder.Load().ok());
  EXPECT_EQ(holder.Current(), before);
}

}  // namespace
}  // namespace imgpipe
