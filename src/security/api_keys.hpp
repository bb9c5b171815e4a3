#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/clock.hpp"
#include "core/records.hpp"
#include "core/result.hpp"
#include "warehouse/metadata_store.hpp"

namespace imgpipe {

//! A key as created: the record and the secret, which exists only in this value and is shown to the user once.
struct NewApiKey {
  ApiKeyRecord record;
  std::string secret;  //!< "imgp_" + 43 characters of base64url (32 random bytes)
};

//! API keys and roles. Secrets are 32 random bytes, stored only as SHA-256 hashes (a slow KDF buys nothing for
//! 256-bit random secrets). Thread-safe.
class ApiKeys {
 public:
  ApiKeys(MetadataStore& store, const Clock& clock) : store_(store), clock_(clock) {}

  Result<NewApiKey> Create(Role role, std::string name);
  //! The active key for an "Authorization" header value ("Bearer <secret>"); kUnauthenticated when missing,
  //! malformed, unknown or revoked (the message says which, without echoing the secret).
  Result<ApiKeyRecord> Authenticate(std::string_view authorization_header);
  Result<std::vector<ApiKeyRecord>> List() { return store_.ListApiKeys(); }
  Status Revoke(const std::string& id) { return store_.RevokeApiKey(id, clock_.Now()); }
  //! Creates the first admin key when there is no key at all; returns the secret then, or an empty string.
  Result<std::string> BootstrapAdmin();

  static std::string HashSecret(std::string_view secret);

 private:
  MetadataStore& store_;
  const Clock& clock_;
};

//! True if `role` may do what `allowed` lists; admin may do everything.
bool RoleAllowed(Role role, std::initializer_list<Role> allowed);

}  // namespace imgpipe
