#include "crypto/local/local_key_provider.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <openssl/crypto.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/ids.hpp"
#include "crypto/secret_file.hpp"

namespace imgpipe {

namespace json = boost::json;

namespace {

constexpr int kKeyringFormat = 1;

Error Malformed(const std::string& what) {
  return MakeError(ErrorKind::kIntegrity, "keyring file: " + what, "integrity_error");
}

Error Unavailable(const std::string& path, const std::string& what) {
  return MakeError(ErrorKind::kUnavailable, "keyring " + path + ": " + what);
}

std::string FileIdentity(const struct stat& st) {
  return std::to_string(st.st_ino) + ":" + std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) +
         "." + std::to_string(st.st_mtim.tv_nsec);
}

// An exclusive flock on `<path>.lock`, released when destroyed.
class FileLock {
 public:
  explicit FileLock(const std::string& path) {
    fd_ = ::open((path + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd_ >= 0 && ::flock(fd_, LOCK_EX) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~FileLock() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool ok() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

LocalKeyring NewKeyring(TimePoint now) {
  LocalKeyring ring;
  ring.key_id = "local-" + HexEncode(RandomBytes(8));
  ring.versions[1] = LocalKeyring::Version{DataKey::Random(), now};
  return ring;
}

}  // namespace

Result<LocalKeyring> ParseKeyring(std::string_view text) {
  boost::system::error_code ec;
  json::value root = json::parse(text, ec);
  if (ec || !root.is_object()) return Malformed("not a JSON object");
  const json::object& o = root.as_object();
  const json::value* format = o.if_contains("format");
  if (format == nullptr || !format->is_int64() || format->as_int64() != kKeyringFormat) {
    return Malformed("\"format\" is not " + std::to_string(kKeyringFormat));
  }
  LocalKeyring ring;
  const json::value* key_id = o.if_contains("key_id");
  if (key_id == nullptr || !key_id->is_string() || key_id->as_string().empty() ||
      key_id->as_string().size() > kMaxKeyIdBytes) {
    return Malformed("\"key_id\" missing or longer than " + std::to_string(kMaxKeyIdBytes));
  }
  ring.key_id = std::string(key_id->as_string());
  for (char c : ring.key_id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') {
      return Malformed("\"key_id\" has characters outside [A-Za-z0-9._-]");
    }
  }
  const json::value* versions = o.if_contains("versions");
  if (versions == nullptr || !versions->is_array()) return Malformed("\"versions\" is not an array");
  for (const json::value& v : versions->as_array()) {
    const json::object* vo = v.if_object();
    if (vo == nullptr) return Malformed("a version is not an object");
    const json::value* number = vo->if_contains("version");
    const json::value* created = vo->if_contains("created");
    const json::value* key = vo->if_contains("key");
    if (number == nullptr || !number->is_int64() || number->as_int64() < 1 || number->as_int64() > UINT32_MAX) {
      return Malformed("a version number is missing or out of range");
    }
    auto n = static_cast<uint32_t>(number->as_int64());
    LocalKeyring::Version version;
    if (created == nullptr || !created->is_string() || !ParseRfc3339(created->as_string(), &version.created)) {
      return Malformed("version " + std::to_string(n) + ": \"created\" is not an RFC 3339 time");
    }
    std::string raw;
    if (key == nullptr || !key->is_string() || !HexDecode(key->as_string(), &raw) || raw.size() != kDataKeyBytes) {
      return Malformed("version " + std::to_string(n) + ": \"key\" is not 64 hex digits");
    }
    version.kek = *DataKey::FromBytes(raw);
    OPENSSL_cleanse(raw.data(), raw.size());
    if (!ring.versions.emplace(n, std::move(version)).second) {
      return Malformed("version " + std::to_string(n) + " appears twice");
    }
  }
  if (const json::value* retired = o.if_contains("retired")) {
    if (!retired->is_array()) return Malformed("\"retired\" is not an array");
    for (const json::value& v : retired->as_array()) {
      if (!v.is_int64() || v.as_int64() < 1 || v.as_int64() > UINT32_MAX) return Malformed("bad retired version");
      ring.retired.insert(static_cast<uint32_t>(v.as_int64()));
    }
  }
  if (ring.versions.empty()) return Malformed("no usable version");
  return ring;
}

std::string SerializeKeyring(const LocalKeyring& ring) {
  json::array versions;
  for (const auto& [n, v] : ring.versions) {
    versions.push_back(json::object{
        {"version", n},
        {"created", FormatRfc3339(v.created)},
        {"key", HexEncode(std::string_view(reinterpret_cast<const char*>(v.kek.data()), v.kek.size()))}});
  }
  json::array retired;
  for (uint32_t n : ring.retired) retired.push_back(n);
  json::object root{{"format", kKeyringFormat},
                    {"key_id", ring.key_id},
                    {"versions", std::move(versions)},
                    {"retired", std::move(retired)}};
  return json::serialize(root) + "\n";
}

Result<std::unique_ptr<LocalKeyProvider>> LocalKeyProvider::Open(std::string path, const Clock& clock) {
  std::unique_ptr<LocalKeyProvider> p(new LocalKeyProvider(std::move(path), clock));
  std::lock_guard lock(p->mu_);
  struct stat st {};
  if (::stat(p->path_.c_str(), &st) != 0) {
    if (errno != ENOENT) return Unavailable(p->path_, std::strerror(errno));
    std::error_code ec;
    auto dir = std::filesystem::path(p->path_).parent_path();
    if (!dir.empty()) std::filesystem::create_directories(dir, ec);
    FileLock file_lock(p->path_);
    if (!file_lock.ok()) return Unavailable(p->path_, std::string("cannot lock: ") + std::strerror(errno));
    // Another process may have created it while we waited for the lock.
    if (::stat(p->path_.c_str(), &st) != 0) {
      IMGPIPE_TRY(WriteSecretFile(p->path_, SerializeKeyring(NewKeyring(clock.Now())), "keyring"));
    }
  } else if ((st.st_mode & 037) != 0 || ((st.st_mode & 040) != 0 && st.st_gid != ::getegid())) {
    // Read by our own group is allowed: Kubernetes makes a Secret's files group-readable by the pod's fsGroup
    // (deploy/k8s mounts the shared keyring that way), and that group is this process's.
    char mode[8];
    std::snprintf(mode, sizeof mode, "%03o", static_cast<unsigned>(st.st_mode & 0777));
    return MakeError(ErrorKind::kPermissionDenied, "keyring " + p->path_ + " is readable by others or by a group not this process's (mode " +
                                                       mode + "); it holds the keys to every object: chmod 600 it");
  }
  IMGPIPE_TRY(p->Refresh(/*force=*/true));
  return p;
}

Status LocalKeyProvider::Refresh(bool force) {
  TimePoint now = clock_.Now();
  if (!force && now >= checked_ && now - checked_ < std::chrono::seconds(1)) {
    if (last_error_) return *last_error_;
    return Ok();
  }
  checked_ = now;
  Status s = Reload();
  last_error_ = s.ok() ? std::nullopt : std::optional<Error>(s.error());
  return s;
}

Status LocalKeyProvider::Reload() {
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0) {
    return Unavailable(path_, std::string("cannot read it (") + std::strerror(errno) +
                                  "); restore it from its backup, or writes stay refused");
  }
  std::string identity = FileIdentity(st);
  if (identity == file_identity_) return Ok();
  auto text = ReadSecretFile(path_, "keyring");
  if (!text.ok()) {
    return Unavailable(path_, text.error().message + "; restore it from its backup, or writes stay refused");
  }
  auto ring = ParseKeyring(*text);
  OPENSSL_cleanse(text->data(), text->size());
  if (!ring.ok()) {
    Error e = ring.error();
    e.message = path_ + ": " + e.message;
    return e;
  }
  if (!key_id_.empty() && ring->key_id != key_id_) {
    return Unavailable(path_, "its key id changed from " + key_id_ + " to " + ring->key_id +
                                  " while running; the keyring was replaced: restart imgpipe after checking it");
  }
  key_id_ = ring->key_id;
  ring_ = std::move(ring).value();
  file_identity_ = identity;
  return Ok();
}

Result<WrappedKey> LocalKeyProvider::Wrap(const DataKey& key, std::string_view aad) {
  std::lock_guard lock(mu_);
  IMGPIPE_TRY(Refresh(false));
  const auto& [version, current] = *ring_.versions.rbegin();
  std::string_view plain(reinterpret_cast<const char*>(key.data()), key.size());
  IMGPIPE_ASSIGN_OR_RETURN(std::string sealed, AesGcmSeal(current.kek.data(), aad, plain));
  return WrappedKey{key_id_, version, WrapAlgorithm::kAes256Gcm, std::move(sealed)};
}

Result<DataKey> LocalKeyProvider::Unwrap(const WrappedKey& wrapped, std::string_view aad) {
  std::lock_guard lock(mu_);
  IMGPIPE_TRY(Refresh(false));
  if (wrapped.key_id != key_id_) {
    return MakeError(ErrorKind::kNotFound, "wrapped by keyring " + wrapped.key_id + ", but this keyring (" + path_ +
                                               ") is " + key_id_ + "; restore the keyring that encrypted it");
  }
  auto it = ring_.versions.find(wrapped.version);
  if (it == ring_.versions.end()) {
    IMGPIPE_TRY(Refresh(true));  // a version another process just added
    it = ring_.versions.find(wrapped.version);
  }
  if (it == ring_.versions.end()) {
    bool retired = ring_.retired.count(wrapped.version) > 0;
    return MakeError(ErrorKind::kNotFound, "KEK version " + std::to_string(wrapped.version) + " of " + key_id_ +
                                               (retired ? " was retired" : " is not in the keyring"));
  }
  IMGPIPE_ASSIGN_OR_RETURN(std::string plain, AesGcmOpen(it->second.kek.data(), aad, wrapped.bytes));
  auto key = DataKey::FromBytes(plain);
  OPENSSL_cleanse(plain.data(), plain.size());
  if (!key) return MakeError(ErrorKind::kIntegrity, "unwrapped data key has the wrong length", "integrity_error");
  return *key;
}

Result<std::vector<KekVersion>> LocalKeyProvider::Versions() {
  std::lock_guard lock(mu_);
  IMGPIPE_TRY(Refresh(true));
  std::vector<KekVersion> out;
  for (const auto& [n, v] : ring_.versions) out.push_back(KekVersion{n, v.created, false});
  out.back().current = true;
  return out;
}

Status LocalKeyProvider::Modify(const std::function<Status(LocalKeyring&)>& change) {
  FileLock file_lock(path_);
  if (!file_lock.ok()) return Unavailable(path_, std::string("cannot lock: ") + std::strerror(errno));
  IMGPIPE_TRY(Refresh(true));
  LocalKeyring next = ring_;
  IMGPIPE_TRY(change(next));
  IMGPIPE_TRY(WriteSecretFile(path_, SerializeKeyring(next), "keyring"));
  return Refresh(true);
}

Result<KekVersion> LocalKeyProvider::Rotate() {
  std::lock_guard lock(mu_);
  KekVersion added;
  IMGPIPE_TRY(Modify([&](LocalKeyring& ring) -> Status {
    uint32_t top = ring.versions.rbegin()->first;
    if (!ring.retired.empty()) top = std::max(top, *ring.retired.rbegin());
    added = KekVersion{top + 1, clock_.Now(), true};
    ring.versions[added.version] = LocalKeyring::Version{DataKey::Random(), added.created};
    return Ok();
  }));
  return added;
}

Status LocalKeyProvider::Retire(uint32_t version) {
  std::lock_guard lock(mu_);
  return Modify([&](LocalKeyring& ring) -> Status {
    if (!ring.versions.count(version)) {
      return MakeError(ErrorKind::kNotFound, "KEK version " + std::to_string(version) + " is not in the keyring");
    }
    if (version == ring.versions.rbegin()->first) {
      return MakeError(ErrorKind::kConflict, "KEK version " + std::to_string(version) +
                                                 " is the current one; rotate first, then rewrap, then retire it");
    }
    ring.versions.erase(version);
    ring.retired.insert(version);
    return Ok();
  });
}

Status LocalKeyProvider::Ping() {
  std::lock_guard lock(mu_);
  return Refresh(false);
}

}  // namespace imgpipe
