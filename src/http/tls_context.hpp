#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "core/result.hpp"

namespace boost::asio::ssl {
class context;
}

namespace imgpipe {

//! Whether a listener asks clients for a certificate (mTLS).
enum class ClientAuth {
  kNone,      //!< no client certificate is asked for
  kOptional,  //!< asked for; a client without one is served, one with a certificate the CA did not sign is refused
  kRequired,  //!< a client without a certificate signed by the CA is refused during the handshake
};

//! The TLS settings of one listener, as the config names them (`<prefix>.tls_cert` ...).
struct TlsSettings {
  std::string cert_file;       //!< PEM: the server certificate, then its intermediates
  std::string key_file;        //!< PEM: its private key (unencrypted)
  std::string client_ca_file;  //!< PEM: the CA(s) whose client certificates are accepted; "" = none
  ClientAuth client_auth = ClientAuth::kNone;
  std::string config_prefix = "server";  //!< names the keys in error messages ("server" or "admin")

  bool enabled() const { return !cert_file.empty(); }
};

//! Builds a server context: TLS 1.2 and 1.3 only, forward-secret AEAD ciphers for 1.2 (1.3's suites are all
//! AEAD), no compression, no renegotiation. kInvalidArgument naming the config key when a file is missing,
//! unreadable, or the key does not match the certificate.
Result<std::shared_ptr<boost::asio::ssl::context>> MakeServerTlsContext(const TlsSettings& settings);

//! The context new connections of one listener use, replaceable while the listener runs (certificate reload on
//! SIGHUP). Thread-safe. A connection keeps the context it was handed for its whole life, so open connections are not
//! disturbed by a reload; only new handshakes see the new certificate.
class TlsContextHolder {
 public:
  explicit TlsContextHolder(TlsSettings settings) : settings_(std::move(settings)) {}

  //! Loads the files; on error the current context (if any) stays in use.
  Status Load();
  std::shared_ptr<boost::asio::ssl::context> Current() const;
  const TlsSettings& settings() const { return settings_; }

 private:
  TlsSettings settings_;
  mutable std::mutex mu_;
  std::shared_ptr<boost::asio::ssl::context> current_;
};

}  // namespace imgpipe
