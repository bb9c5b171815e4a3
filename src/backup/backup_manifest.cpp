#include "backup/backup_manifest.hpp"

#include <boost/json.hpp>

#include <algorithm>

#include "storage/blob_store.hpp"

namespace imgpipe {

namespace json = boost::json;

namespace {

constexpr int64_t kFormat = 1;

Error Bad(const std::string& what) {
  return MakeError(ErrorKind::kIntegrity, "backup manifest: " + what + "; the backup is damaged or not an imgpipe "
                                          "backup");
}

bool IsSha256Hex(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// Readers of one JSON object's fields; each returns false (and names the field) when it is missing or mistyped.
struct Fields {
  const json::object& obj;
  std::string where;
  std::string problem;

  bool String(const char* name, std::string* out, size_t max = 4096) {
    const json::value* v = obj.if_contains(name);
    if (!v || !v->is_string() || v->as_string().size() > max) return Fail(name, "a string");
    *out = std::string(v->as_string());
    return true;
  }
  bool Bool(const char* name, bool* out) {
    const json::value* v = obj.if_contains(name);
    if (!v || !v->is_bool()) return Fail(name, "true or false");
    *out = v->as_bool();
    return true;
  }
  bool Uint(const char* name, uint64_t* out) {
    const json::value* v = obj.if_contains(name);
    if (v && v->is_uint64()) {
      *out = v->as_uint64();
      return true;
    }
    if (!v || !v->is_int64() || v->as_int64() < 0) return Fail(name, "a non-negative integer");
    *out = static_cast<uint64_t>(v->as_int64());
    return true;
  }
  bool Fail(const char* name, const char* what) {
    problem = where + "\"" + name + "\" is not " + what;
    return false;
  }
};

}  // namespace

std::string SerializeBackupManifest(const BackupManifest& m) {
  json::array blobs;
  blobs.reserve(m.blobs.size());
  for (const BackupBlob& b : m.blobs) {
    blobs.push_back(json::object{{"container", b.container}, {"key", b.key}, {"bytes", b.bytes}, {"sha256", b.sha256}});
  }
  json::object root{{"format", kFormat},
                    {"created", m.created},
                    {"imgpipe_version", m.imgpipe_version},
                    {"database_backend", m.database_backend},
                    {"has_database", m.has_database},
                    {"database_sha256", m.database_sha256},
                    {"database_bytes", m.database_bytes},
                    {"schema_version", m.schema_version},
                    {"has_database_key", m.has_database_key},
                    {"database_key_sha256", m.database_key_sha256},
                    {"has_keyring", m.has_keyring},
                    {"has_config", m.has_config},
                    {"config_sha256", m.config_sha256},
                    {"blob_backend", m.blob_backend},
                    {"blobs_included", m.blobs_included},
                    {"blobs", std::move(blobs)}};
  return json::serialize(root) + "\n";
}

Result<BackupManifest> ParseBackupManifest(std::string_view text) {
  boost::system::error_code ec;
  json::value root = json::parse(text, ec);
  if (ec) return Bad("not JSON (" + ec.message() + ")");
  if (!root.is_object()) return Bad("not a JSON object");
  const json::object& obj = root.as_object();
  const json::value* format = obj.if_contains("format");
  if (!format || !format->is_int64() || format->as_int64() != kFormat) {
    return Bad("\"format\" is not 1 (a backup made by a newer imgpipe? restore it with that version)");
  }
  BackupManifest m;
  Fields f{obj, "", ""};
  uint64_t schema = 0;
  if (!f.String("created", &m.created, 64) || !f.String("imgpipe_version", &m.imgpipe_version, 64) ||
      !f.String("database_backend", &m.database_backend, 16) || !f.Bool("has_database", &m.has_database) ||
      !f.String("database_sha256", &m.database_sha256, 64) || !f.Uint("database_bytes", &m.database_bytes) ||
      !f.Uint("schema_version", &schema) || !f.Bool("has_database_key", &m.has_database_key) ||
      !f.String("database_key_sha256", &m.database_key_sha256, 64) || !f.Bool("has_keyring", &m.has_keyring) ||
      !f.Bool("has_config", &m.has_config) || !f.String("config_sha256", &m.config_sha256, 64) ||
      !f.String("blob_backend", &m.blob_backend, 16) || !f.Bool("blobs_included", &m.blobs_included)) {
    return Bad(f.problem);
  }
  if (schema > 1'000'000) return Bad("\"schema_version\" is out of range");
  m.schema_version = static_cast<int>(schema);
  if (m.database_backend != "sqlite" && m.database_backend != "postgres") {
    return Bad("\"database_backend\" is not sqlite or postgres");
  }
  if (m.has_database && (m.database_backend != "sqlite" || !IsSha256Hex(m.database_sha256))) {
    return Bad("the database entry needs the sqlite backend and a SHA-256 digest");
  }
  if (m.has_database_key && (!m.has_database || !IsSha256Hex(m.database_key_sha256))) {
    return Bad("the database key entry needs a database and a SHA-256 digest");
  }
  if (m.has_config && !IsSha256Hex(m.config_sha256)) return Bad("\"config_sha256\" is not a SHA-256 digest");
  if (m.blob_backend != "local" && m.blob_backend != "azure" && m.blob_backend != "s3") {
    return Bad("\"blob_backend\" is not local, azure or s3");
  }
  const json::value* blobs = obj.if_contains("blobs");
  if (!blobs || !blobs->is_array()) return Bad("\"blobs\" is not an array");
  m.blobs.reserve(blobs->as_array().size());
  for (const json::value& v : blobs->as_array()) {
    const std::string where = "blob " + std::to_string(m.blobs.size()) + ": ";
    if (!v.is_object()) return Bad(where + "not an object");
    Fields bf{v.as_object(), where, ""};
    BackupBlob b;
    if (!bf.String("container", &b.container, 32) || !bf.String("key", &b.key, 1024) || !bf.Uint("bytes", &b.bytes) ||
        !bf.String("sha256", &b.sha256, 64)) {
      return Bad(bf.problem);
    }
    if (b.container != kOriginals && b.container != kRenditions && b.container != kScripts) {
      return Bad(where + "container \"" + b.container + "\" is not one imgpipe writes");
    }
    if (Status s = ValidateBlobKey(b.key); !s.ok()) return Bad(where + s.error().message);
    if (!IsSha256Hex(b.sha256)) return Bad(where + "\"sha256\" is not a SHA-256 digest");
    m.blobs.push_back(std::move(b));
  }
  return m;
}

}  // namespace imgpipe
