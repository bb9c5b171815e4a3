#include "crypto/database_key.hpp"

#include <boost/json.hpp>

#include <optional>

#include "core/ids.hpp"
#include "crypto/secret_file.hpp"

namespace imgpipe {

namespace json = boost::json;

namespace {

constexpr std::string_view kFormat = "imgpipe-database-key/1";
constexpr std::string_view kWhat = "warehouse key file";

struct Sidecar {
  std::string database_id;  // random, 32 hex digits: binds the wrapped key to this sidecar
  WrappedKey wrapped;
};

Error Malformed(const std::string& path, const std::string& problem) {
  return MakeError(ErrorKind::kIntegrity,
                   std::string(kWhat) + " " + path + " is damaged (" + problem +
                       "); restore it from the backup taken with the database, or the database cannot be opened",
                   "integrity_error");
}

// The wrap's additional data: a key wrapped for one database's sidecar does not open as another's.
std::string WrapAad(const Sidecar& s) { return "imgpipe-database-key\x01" + s.database_id; }

Result<Sidecar> Parse(const std::string& path, const std::string& text) {
  boost::system::error_code ec;
  json::value root = json::parse(text, ec);
  if (ec || !root.is_object()) return Malformed(path, "not a JSON object");
  const json::object& o = root.as_object();
  auto str = [&](std::string_view name) -> std::optional<std::string> {
    const json::value* v = o.if_contains(name);
    if (v == nullptr || !v->is_string()) return std::nullopt;
    return std::string(v->as_string());
  };
  if (str("format") != std::string(kFormat)) return Malformed(path, "format is not \"" + std::string(kFormat) + "\"");
  Sidecar s;
  auto id = str("database_id");
  std::string raw;
  if (!id || id->size() != 32 || !HexDecode(*id, &raw)) return Malformed(path, "database_id is not 32 hex digits");
  s.database_id = *id;
  auto key_id = str("key_id");
  if (!key_id || key_id->empty() || key_id->size() > kMaxKeyIdBytes) return Malformed(path, "bad key_id");
  s.wrapped.key_id = *key_id;
  const json::value* version = o.if_contains("version");
  if (version == nullptr || !version->is_int64() || version->as_int64() < 1 || version->as_int64() > UINT32_MAX) {
    return Malformed(path, "version is not a KEK version");
  }
  s.wrapped.version = static_cast<uint32_t>(version->as_int64());
  const json::value* algorithm = o.if_contains("algorithm");
  if (algorithm == nullptr || !algorithm->is_int64() ||
      algorithm->as_int64() != static_cast<int64_t>(WrapAlgorithm::kAes256Gcm)) {
    return Malformed(path, "unknown wrap algorithm");
  }
  auto wrapped = str("wrapped");
  if (!wrapped || !HexDecode(*wrapped, &raw) || raw.empty() || raw.size() > kMaxWrappedKeyBytes) {
    return Malformed(path, "wrapped is not the hex of a wrapped key");
  }
  s.wrapped.bytes = raw;
  return s;
}

std::string Serialize(const Sidecar& s) {
  json::object root{{"format", kFormat},
                    {"database_id", s.database_id},
                    {"key_id", s.wrapped.key_id},
                    {"version", s.wrapped.version},
                    {"algorithm", static_cast<int>(s.wrapped.algorithm)},
                    {"wrapped", HexEncode(s.wrapped.bytes)}};
  return json::serialize(root) + "\n";
}

Result<Sidecar> Load(const std::string& path) {
  IMGPIPE_ASSIGN_OR_RETURN(std::string text, ReadSecretFile(path, kWhat));
  return Parse(path, text);
}

Result<DataKey> Unwrap(KeyProvider& keys, const std::string& path, const Sidecar& s) {
  auto key = keys.Unwrap(s.wrapped, WrapAad(s));
  // kNotFound: the provider has no such KEK (another keyring, another token label): the same wrong-key case.
  if (!key.ok() && (key.error().kind == ErrorKind::kIntegrity || key.error().kind == ErrorKind::kNotFound)) {
    return MakeError(ErrorKind::kIntegrity,
                     std::string(kWhat) + " " + path + ": its key does not open under the " +
                         std::string(keys.Name()) + " key provider's KEK " + s.wrapped.key_id + " v" +
                         std::to_string(s.wrapped.version) + " (" + key.error().message +
                         "); is this the keyring or token the database was created with?",
                     "integrity_error");
  }
  return key;
}

}  // namespace

std::string DatabaseKeyPath(const std::string& db_path) { return db_path + ".key"; }

Result<DataKey> OpenDatabaseKey(KeyProvider& keys, const std::string& sidecar_path, bool create) {
  auto sidecar = Load(sidecar_path);
  if (sidecar.ok()) return Unwrap(keys, sidecar_path, *sidecar);
  if (sidecar.error().kind != ErrorKind::kNotFound || !create) return sidecar.error();
  Sidecar s;
  s.database_id = HexEncode(RandomBytes(16));
  DataKey key = DataKey::Random();
  IMGPIPE_ASSIGN_OR_RETURN(s.wrapped, keys.Wrap(key, WrapAad(s)));
  IMGPIPE_TRY(WriteSecretFile(sidecar_path, Serialize(s), kWhat));
  return key;
}

Result<uint32_t> DatabaseKeyVersion(const std::string& sidecar_path) {
  IMGPIPE_ASSIGN_OR_RETURN(Sidecar s, Load(sidecar_path));
  return s.wrapped.version;
}

Result<bool> RewrapDatabaseKey(KeyProvider& keys, const std::string& sidecar_path) {
  auto sidecar = Load(sidecar_path);
  if (!sidecar.ok() && sidecar.error().kind == ErrorKind::kNotFound) return false;
  IMGPIPE_ASSIGN_OR_RETURN(Sidecar s, std::move(sidecar));
  IMGPIPE_ASSIGN_OR_RETURN(auto versions, keys.Versions());
  if (versions.empty() || versions.back().version == s.wrapped.version) return false;
  IMGPIPE_ASSIGN_OR_RETURN(DataKey key, Unwrap(keys, sidecar_path, s));
  IMGPIPE_ASSIGN_OR_RETURN(s.wrapped, keys.Wrap(key, WrapAad(s)));
  IMGPIPE_TRY(WriteSecretFile(sidecar_path, Serialize(s), kWhat));
  return true;
}

std::string SqlcipherRawKey(const DataKey& key) {
  return "x'" + HexEncode(std::string_view(reinterpret_cast<const char*>(key.data()), key.size())) + "'";
}

}  // namespace imgpipe
