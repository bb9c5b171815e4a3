#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "crypto/key_provider.hpp"

namespace imgpipe {

//! The content of a keyring file.
struct LocalKeyring {
  struct Version {
    DataKey kek;
    TimePoint created;
  };
  std::string key_id;                  //!< "local-" + 16 random hex digits, written into every object's header
  std::map<uint32_t, Version> versions;  //!< usable versions; the highest is current
  std::set<uint32_t> retired;          //!< destroyed versions (numbers are never reused)
};
//! Parses a keyring file; kIntegrity naming the problem (never echoing key material).
Result<LocalKeyring> ParseKeyring(std::string_view text);
std::string SerializeKeyring(const LocalKeyring& ring);

//! Wraps data keys with AES-256-GCM under KEKs kept in a keyring file (JSON, mode 0600): the embedded default. The
//! file holds the KEK material itself, so whoever reads it can decrypt everything; keep it out of the data
//! folder's backups or protect it like a private key (docs/OPERATIONS.md). For keys that never leave hardware, use
//! Pkcs11KeyProvider.
//!
//! Several processes may share one keyring (serve, `imgpipe kek rotate`): changes are made under an flock on
//! `<path>.lock` and published by atomic rename; every process re-reads the file when it changes (checked at most
//! once a second of `clock`, and at once when asked for a version it does not know). If the file disappears or becomes
//! unreadable, Wrap and Ping fail (kUnavailable): nothing is written that a restart could not decrypt.
class LocalKeyProvider final : public KeyProvider {
 public:
  //! Opens the keyring at `path`, creating it with one KEK version if it does not exist. kUnavailable if it cannot
  //! be read or created, kIntegrity if it is not a keyring, kPermissionDenied if group or others may read it.
  //! `clock` must outlive the provider.
  static Result<std::unique_ptr<LocalKeyProvider>> Open(std::string path, const Clock& clock);

  std::string_view Name() const override { return "local"; }
  Result<WrappedKey> Wrap(const DataKey& key, std::string_view aad) override;
  Result<DataKey> Unwrap(const WrappedKey& wrapped, std::string_view aad) override;
  Result<std::vector<KekVersion>> Versions() override;
  Result<KekVersion> Rotate() override;
  Status Retire(uint32_t version) override;
  Status Ping() override;

  const std::string& key_id() const { return key_id_; }

 private:
  LocalKeyProvider(std::string path, const Clock& clock) : path_(std::move(path)), clock_(clock) {}

  //! Re-reads the file if it changed since the last read; `force` skips the once-a-second throttle. Caller holds mu_.
  Status Refresh(bool force);
  Status Reload();
  //! Runs `change` on the keyring under the file lock and publishes the result. Caller holds mu_.
  Status Modify(const std::function<Status(LocalKeyring&)>& change);

  std::string path_;
  const Clock& clock_;
  std::mutex mu_;
  std::string key_id_;
  LocalKeyring ring_;
  std::string file_identity_;  //!< inode, size and mtime of the version read
  TimePoint checked_{};
  std::optional<Error> last_error_;  //!< the last check's failure, repeated until the next check  //!< when the file was last checked (on clock_, so tests can move it)
};

}  // namespace imgpipe
