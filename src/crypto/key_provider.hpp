#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.hpp"
#include "core/result.hpp"
#include "crypto/envelope_format.hpp"

namespace imgpipe {

//! One version of a key-encryption key (KEK).
struct KekVersion {
  uint32_t version = 0;
  TimePoint created;
  bool current = false;  //!< the version new data keys are wrapped with (the newest)
};

//! The key vault: wraps and unwraps data keys with a key-encryption key that callers never see. Implementations:
//! LocalKeyProvider (a keyring file), Pkcs11KeyProvider (an HSM; the KEK never leaves the token).
//!
//! Every method is thread-safe. Failures to reach the vault are kUnavailable (callers fail closed: no key, no
//! write); a wrapped key that does not open under its KEK (wrong key, tampered header, retired version) is
//! kIntegrity, or kNotFound naming the version when the provider has no such version.
class KeyProvider {
 public:
  virtual ~KeyProvider() = default;

  //! "local" or "pkcs11", for logs and errors.
  virtual std::string_view Name() const = 0;
  //! Wraps `key` with the current KEK version, bound to `aad` (the same `aad` must be given to Unwrap).
  virtual Result<WrappedKey> Wrap(const DataKey& key, std::string_view aad) = 0;
  virtual Result<DataKey> Unwrap(const WrappedKey& wrapped, std::string_view aad) = 0;
  //! The KEK versions that can unwrap, oldest first; the last one is current.
  virtual Result<std::vector<KekVersion>> Versions() = 0;
  //! Adds a new KEK version, which becomes current for this process at once and for other processes sharing the
  //! vault within their refresh interval (see each provider).
  virtual Result<KekVersion> Rotate() = 0;
  //! Destroys a KEK version; refused (kConflict) for the current one. Data keys wrapped with it can no longer be
  //! opened, so callers check that no object uses it first (`imgpipe kek retire` does).
  virtual Status Retire(uint32_t version) = 0;
  //! Ok if keys can be wrapped now; otherwise why not (for /readyz).
  virtual Status Ping() = 0;
};

}  // namespace imgpipe
