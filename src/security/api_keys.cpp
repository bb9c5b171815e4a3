#include "security/api_keys.hpp"

#include "core/ids.hpp"

namespace imgpipe {

namespace {
constexpr std::string_view kPrefix = "imgp_";
constexpr size_t kSecretChars = 43;  // base64url of 32 bytes, no padding
}  // namespace

std::string ApiKeys::HashSecret(std::string_view secret) { return Sha256Hex(secret); }

Result<NewApiKey> ApiKeys::Create(Role role, std::string name) {
  NewApiKey out;
  out.secret = std::string(kPrefix) + Base64UrlEncode(RandomBytes(32));
  out.record.id = "key_" + HexEncode(RandomBytes(6));
  out.record.secret_hash = HashSecret(out.secret);
  out.record.role = role;
  out.record.name = std::move(name);
  out.record.created_at = clock_.Now();
  IMGPIPE_TRY(store_.CreateApiKey(out.record));
  return out;
}

Result<ApiKeyRecord> ApiKeys::Authenticate(std::string_view header) {
  if (header.empty()) {
    return MakeError(ErrorKind::kUnauthenticated, "missing Authorization header; send \"Authorization: Bearer <key>\"");
  }
  constexpr std::string_view kBearer = "Bearer ";
  if (header.size() <= kBearer.size() || !std::equal(kBearer.begin(), kBearer.end(), header.begin(), [](char a, char b) {
        return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
      })) {
    return MakeError(ErrorKind::kUnauthenticated, "Authorization header is not of the form \"Bearer <key>\"");
  }
  std::string_view secret = header.substr(kBearer.size());
  while (!secret.empty() && secret.front() == ' ') secret.remove_prefix(1);
  while (!secret.empty() && secret.back() == ' ') secret.remove_suffix(1);
  if (secret.size() != kPrefix.size() + kSecretChars || secret.substr(0, kPrefix.size()) != kPrefix) {
    return MakeError(ErrorKind::kUnauthenticated, "API key is malformed; keys look like imgp_ followed by 43 characters");
  }
  auto found = store_.FindApiKeyByHash(HashSecret(secret));
  if (!found.ok()) {
    if (found.error().kind == ErrorKind::kNotFound) {
      return MakeError(ErrorKind::kUnauthenticated, "unknown API key");
    }
    return found.error();
  }
  if (found->revoked_at) {
    return MakeError(ErrorKind::kUnauthenticated, "API key " + found->id + " was revoked");
  }
  return std::move(found).value();
}

Result<std::string> ApiKeys::BootstrapAdmin() {
  IMGPIPE_ASSIGN_OR_RETURN(int64_t count, store_.CountApiKeys());
  if (count > 0) return std::string();
  IMGPIPE_ASSIGN_OR_RETURN(NewApiKey key, Create(Role::kAdmin, "bootstrap admin"));
  return key.secret;
}

bool RoleAllowed(Role role, std::initializer_list<Role> allowed) {
  if (role == Role::kAdmin) return true;
  for (Role r : allowed) {
    if (r == role) return true;
  }
  return false;
}

}  // namespace imgpipe
