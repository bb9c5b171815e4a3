#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "crypto/key_provider.hpp"

namespace imgpipe {

//! Wraps data keys inside an HSM through PKCS#11: each KEK version is an AES-256 secret key object on the token
//! (CKA_SENSITIVE, not extractable) labelled "<key_label>.v<N>", and wrapping is CKM_AES_GCM encryption of the data
//! key on the token with the envelope's additional data. The KEK never leaves the token; imgpipe only sees wrapped
//! keys and, for reading, unwrapped data keys.
//!
//! The module is dlopen()ed; one logged-in read-write session, used under a lock (HSM calls are short). When the
//! token goes away (removed, renamed, module errors) calls fail with kUnavailable and the session is dropped; the
//! next call re-initialises the module and looks for the token again, so the provider comes back by itself. Other
//! processes' rotations are seen within 5 seconds, and at once when asked for an unknown version. Tested with
//! SoftHSM2 (scripts/services/softhsm).
class Pkcs11KeyProvider final : public KeyProvider {
 public:
  struct Options {
    std::string module;                      //!< path of the PKCS#11 module (.so)
    std::string token_label;                 //!< the token to use, by label
    std::string pin;                         //!< the user PIN
    std::string key_label = "imgpipe-kek";   //!< KEK objects are "<key_label>.v<N>"; also the key id in headers
  };
  //! Loads the module and logs in; creates KEK version 1 on the token if it has none. kUnavailable naming the step
  //! that failed (module not loadable, token not found, wrong PIN...). With `connect_now` false the provider is
  //! returned even then (a server starting while its HSM is away), and every call tries again.
  //! `clock` must outlive the provider.
  static Result<std::unique_ptr<Pkcs11KeyProvider>> Open(Options options, const Clock& clock, bool connect_now = true);
  ~Pkcs11KeyProvider() override;

  std::string_view Name() const override { return "pkcs11"; }
  Result<WrappedKey> Wrap(const DataKey& key, std::string_view aad) override;
  Result<DataKey> Unwrap(const WrappedKey& wrapped, std::string_view aad) override;
  Result<std::vector<KekVersion>> Versions() override;
  Result<KekVersion> Rotate() override;
  Status Retire(uint32_t version) override;
  //! Asks the token for its info and the current KEK: not ok when the token is gone.
  Status Ping() override;

 private:
  struct Impl;
  Pkcs11KeyProvider(Options options, const Clock& clock);

  std::unique_ptr<Impl> impl_;
};

}  // namespace imgpipe
