#pragma once

#include <cstdint>
#include <string>

#include "core/result.hpp"
#include "crypto/key_provider.hpp"

namespace imgpipe {

//! The embedded warehouse's key (docs/ENCRYPTION.md, "The warehouse"): one random 256-bit key per database, wrapped
//! by the key provider's KEK like a data key and kept in a sidecar file beside the database (`<db>.key`, mode 0600,
//! JSON). The unwrapped key is only ever in memory. Rotating the KEK rewraps it (RewrapDatabaseKey) without
//! touching the database.

//! The sidecar of the database at `db_path`.
std::string DatabaseKeyPath(const std::string& db_path);

//! The database's key, unwrapped through `keys`. When the sidecar does not exist and `create`, makes a new random
//! key, wraps it with the current KEK and writes the sidecar first. kNotFound when it does not exist and !create;
//! kIntegrity if the sidecar is malformed or its key does not open under the KEK; kUnavailable (from the provider)
//! when the vault cannot be reached.
Result<DataKey> OpenDatabaseKey(KeyProvider& keys, const std::string& sidecar_path, bool create);

//! The KEK version the sidecar's key is wrapped with (for `imgpipe kek retire`); kNotFound if there is no sidecar.
Result<uint32_t> DatabaseKeyVersion(const std::string& sidecar_path);

//! Rewraps the sidecar's key with the current KEK version; true if it changed (false: already current, or there is
//! no sidecar). Safe while the database is in use: the key itself does not change.
Result<bool> RewrapDatabaseKey(KeyProvider& keys, const std::string& sidecar_path);

//! SQLCipher's raw-key form of `key`, "x'<64 hex digits>'": with it SQLCipher uses the key as it is instead of
//! deriving one from a passphrase (no PBKDF2 on every connection).
std::string SqlcipherRawKey(const DataKey& key);

}  // namespace imgpipe
