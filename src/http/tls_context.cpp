#include "http/tls_context.hpp"

#include <boost/asio/ssl/context.hpp>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <fstream>

namespace imgpipe {

namespace ssl = boost::asio::ssl;

namespace {

// TLS 1.2 suites with forward secrecy and AEAD only (ECDHE + AES-GCM or ChaCha20-Poly1305); TLS 1.3 keeps OpenSSL's
// default suites, which are all of that kind already.
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

// Session resumption with client certificates needs a context id, or OpenSSL refuses resumed sessions.
constexpr unsigned char kSessionIdContext[] = "imgpipe";

std::string OpenSslError() {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(code, buf, sizeof buf);
  return buf;
}

Error Bad(const TlsSettings& s, std::string_view key, const std::string& file, const std::string& why) {
  return MakeError(ErrorKind::kInvalidArgument,
                   s.config_prefix + "." + std::string(key) + ": " + file + ": " + why, "invalid_config");
}

// A readable file, checked first so the message says so instead of OpenSSL's "system lib".
Status Readable(const TlsSettings& s, std::string_view key, const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return Bad(s, key, file, "cannot read the file");
  return Ok();
}

}  // namespace

Result<std::shared_ptr<ssl::context>> MakeServerTlsContext(const TlsSettings& s) {
  if (s.cert_file.empty() || s.key_file.empty()) {
    return MakeError(ErrorKind::kInvalidArgument,
                     s.config_prefix + ".tls_cert and " + s.config_prefix + ".tls_key must both be set", "invalid_config");
  }
  IMGPIPE_TRY(Readable(s, "tls_cert", s.cert_file));
  IMGPIPE_TRY(Readable(s, "tls_key", s.key_file));
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  SSL_CTX* native = ctx->native_handle();
  ERR_clear_error();
  // Version floor through the API, not only the option bits: it also holds if the system's openssl.cnf says less.
  if (SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION) != 1) {
    return MakeError(ErrorKind::kInternal, "cannot set the TLS version floor: " + OpenSslError());
  }
  SSL_CTX_set_options(native, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                  SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1);
  if (SSL_CTX_set_cipher_list(native, kTls12Ciphers) != 1) {
    return MakeError(ErrorKind::kInternal, "cannot set the TLS cipher list: " + OpenSslError());
  }
  if (SSL_CTX_use_certificate_chain_file(native, s.cert_file.c_str()) != 1) {
    return Bad(s, "tls_cert", s.cert_file, "not a PEM certificate (chain): " + OpenSslError());
  }
  if (SSL_CTX_use_PrivateKey_file(native, s.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    // OpenSSL checks the key against the certificate here already ("key values mismatch").
    return Bad(s, "tls_key", s.key_file,
               "not an unencrypted PEM private key that matches " + s.config_prefix + ".tls_cert: " + OpenSslError());
  }
  if (SSL_CTX_check_private_key(native) != 1) {
    return Bad(s, "tls_key", s.key_file, "does not match the certificate in " + s.config_prefix + ".tls_cert");
  }
  SSL_CTX_set_session_id_context(native, kSessionIdContext, sizeof kSessionIdContext - 1);
  if (s.client_auth != ClientAuth::kNone) {
    IMGPIPE_TRY(Readable(s, "tls_client_ca", s.client_ca_file));
    if (SSL_CTX_load_verify_locations(native, s.client_ca_file.c_str(), nullptr) != 1) {
      return Bad(s, "tls_client_ca", s.client_ca_file, "not a PEM CA certificate file: " + OpenSslError());
    }
    // The names sent in the CertificateRequest, so clients holding several certificates pick the right one.
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(s.client_ca_file.c_str());
    if (names == nullptr) {
      return Bad(s, "tls_client_ca", s.client_ca_file, "holds no CA certificate: " + OpenSslError());
    }
    SSL_CTX_set_client_CA_list(native, names);
    int mode = SSL_VERIFY_PEER;
    if (s.client_auth == ClientAuth::kRequired) mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(native, mode, nullptr);
  }
  return ctx;
}

Status TlsContextHolder::Load() {
  IMGPIPE_ASSIGN_OR_RETURN(auto ctx, MakeServerTlsContext(settings_));
  std::lock_guard lock(mu_);
  current_ = std::move(ctx);
  return Ok();
}

std::shared_ptr<ssl::context> TlsContextHolder::Current() const {
  std::lock_guard lock(mu_);
  return current_;
}

}  // namespace imgpipe
