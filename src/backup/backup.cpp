#include "backup/backup.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <thread>

#include "backup/passphrase_seal.hpp"
#include "crypto/database_key.hpp"
#include "core/ids.hpp"

namespace imgpipe {

namespace fs = std::filesystem;

namespace {

constexpr size_t kChunk = 1 << 20;

Error IoError(const fs::path& path, const std::string& what) {
  return MakeError(ErrorKind::kUnavailable, path.string() + ": " + what + ": " + std::strerror(errno));
}

//! SHA-256 over a stream of chunks.
class Sha256Stream {
 public:
  Sha256Stream() : ctx_(EVP_MD_CTX_new(), EVP_MD_CTX_free) { EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr); }
  void Update(std::string_view data) { EVP_DigestUpdate(ctx_.get(), data.data(), data.size()); }
  std::string Hex() {
    unsigned char out[32];
    unsigned int n = 0;
    EVP_DigestFinal_ex(ctx_.get(), out, &n);
    return HexEncode(std::string_view(reinterpret_cast<const char*>(out), n));
  }

 private:
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx_;
};

// A file written, fsynced and renamed into place, so a crash leaves the old state or the new one.
Status WriteFileDurably(const fs::path& path, std::string_view data, mode_t mode) {
  const fs::path tmp = path.string() + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return IoError(tmp, "cannot create");
  bool ok = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()) && ::fsync(fd) == 0;
  ok = ::close(fd) == 0 && ok;
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    Error e = IoError(path, "cannot write");
    ::unlink(tmp.c_str());
    return e;
  }
  return Ok();
}

Result<std::string> ReadSmallFile(const fs::path& path, size_t max_bytes) {
  std::error_code ec;
  auto size = fs::file_size(path, ec);
  if (ec) return MakeError(ErrorKind::kIntegrity, path.string() + " is missing from the backup (" + ec.message() + ")");
  if (size > max_bytes) return MakeError(ErrorKind::kIntegrity, path.string() + " is larger than any imgpipe writes");
  std::ifstream in(path, std::ios::binary);
  std::string text(size, '\0');
  if (!in.read(text.data(), static_cast<std::streamsize>(size))) return IoError(path, "cannot read");
  return text;
}

// Size and SHA-256 of a file.
Result<std::pair<uint64_t, std::string>> DigestFile(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return MakeError(ErrorKind::kIntegrity, path.string() + " is missing from the backup");
  Sha256Stream sha;
  uint64_t total = 0;
  std::string buf(kChunk, '\0');
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      Error e = IoError(path, "cannot read");
      ::close(fd);
      return e;
    }
    if (n == 0) break;
    sha.Update(std::string_view(buf.data(), static_cast<size_t>(n)));
    total += static_cast<uint64_t>(n);
  }
  ::close(fd);
  return std::make_pair(total, sha.Hex());
}

Status EnsureEmptyFolder(const fs::path& dir) {
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_empty(dir, ec)) {
    return MakeError(ErrorKind::kInvalidArgument, dir.string() + " is not empty; back up into a new folder");
  }
  fs::create_directories(dir, ec);
  if (ec) return MakeError(ErrorKind::kUnavailable, "cannot create " + dir.string() + ": " + ec.message());
  fs::permissions(dir, fs::perms::owner_all, ec);
  return Ok();
}

// Copies one stored object into `dest` (when not empty) and returns its size and digest; nullopt when it vanished
// since it was listed (deleted by retention).
Result<std::optional<BackupBlob>> CaptureBlob(BlobStore& store, const BlobInfo& info, const fs::path& dest) {
  auto reader = store.OpenRead(info.container, info.key);
  if (!reader.ok()) {
    if (reader.error().kind == ErrorKind::kNotFound) return std::optional<BackupBlob>();
    return reader.error();
  }
  int fd = -1;
  if (!dest.empty()) {
    std::error_code ec;
    fs::create_directories(dest.parent_path(), ec);
    fd = ::open(dest.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return IoError(dest, "cannot create");
  }
  Sha256Stream sha;
  BackupBlob blob{info.container, info.key, 0, ""};
  std::string buf(kChunk, '\0');
  Status status = Ok();
  for (;;) {
    auto n = (*reader)->Read(std::span<char>(buf.data(), buf.size()));
    if (!n.ok()) {
      status = n.error();
      break;
    }
    if (*n == 0) break;
    std::string_view chunk(buf.data(), *n);
    sha.Update(chunk);
    blob.bytes += *n;
    if (fd >= 0 && ::write(fd, chunk.data(), chunk.size()) != static_cast<ssize_t>(chunk.size())) {
      status = IoError(dest, "cannot write");
      break;
    }
  }
  if (fd >= 0 && (::fsync(fd) != 0 || ::close(fd) != 0) && status.ok()) status = IoError(dest, "cannot write");
  if (!status.ok()) return status.error();
  blob.sha256 = sha.Hex();
  return std::optional<BackupBlob>(std::move(blob));
}

}  // namespace

Result<BackupManifest> CreateBackup(const BackupOptions& o, BlobStore& stored) {
  IMGPIPE_TRY(EnsureEmptyFolder(o.to));
  BackupManifest m;
  m.created = FormatRfc3339(o.now);
  m.imgpipe_version = o.imgpipe_version;
  m.database_backend = o.database_backend;
  m.schema_version = o.schema_version;
  m.blob_backend = std::string(stored.Name());
  m.blobs_included = m.blob_backend == "local";

  // 1. The warehouse first: every row in it names blobs that already exist.
  if (o.copy_database) {
    const fs::path db = o.to / kBackupDatabaseFile;
    IMGPIPE_TRY(o.copy_database(db));
    IMGPIPE_ASSIGN_OR_RETURN(auto digest, DigestFile(db));
    m.has_database = true;
    m.database_bytes = digest.first;
    m.database_sha256 = digest.second;
    if (!o.database_key_path.empty()) {
      // Wrapped by the key provider: useless without the keyring or the HSM, like the blobs.
      IMGPIPE_ASSIGN_OR_RETURN(std::string key, ReadSmallFile(o.database_key_path, 1 << 20));
      IMGPIPE_TRY(WriteFileDurably(o.to / kBackupDatabaseKeyFile, key, 0600));
      m.has_database_key = true;
      m.database_key_sha256 = Sha256Hex(key);
    }
  }
  // 2. The objects.
  for (std::string_view container : {kOriginals, kRenditions, kScripts}) {
    std::string continuation;
    do {
      IMGPIPE_ASSIGN_OR_RETURN(ListPage page, stored.List(container, "", continuation, 1000));
      for (const BlobInfo& info : page.items) {
        fs::path dest;
        if (m.blobs_included) dest = o.to / kBackupBlobsFolder / std::string(container) / info.key;
        IMGPIPE_ASSIGN_OR_RETURN(auto blob, CaptureBlob(stored, info, dest));
        if (blob) m.blobs.push_back(std::move(*blob));
      }
      continuation = page.continuation;
    } while (!continuation.empty());
  }
  // 3. The keyring, sealed: a backup that held it in the clear would protect nothing.
  if (!o.keyring_path.empty()) {
    IMGPIPE_ASSIGN_OR_RETURN(std::string ring, ReadSmallFile(o.keyring_path, 16 << 20));
    auto sealed = SealWithPassphrase(ring, o.passphrase);
    OPENSSL_cleanse(ring.data(), ring.size());
    if (!sealed.ok()) return sealed.error();
    IMGPIPE_TRY(WriteFileDurably(o.to / kBackupKeyringFile, *sealed, 0600));
    m.has_keyring = true;
  }
  if (!o.config_path.empty()) {
    IMGPIPE_ASSIGN_OR_RETURN(std::string config, ReadSmallFile(o.config_path, 16 << 20));
    IMGPIPE_TRY(WriteFileDurably(o.to / kBackupConfigFile, config, 0600));
    m.has_config = true;
    m.config_sha256 = Sha256Hex(config);
  }
  // 4. The manifest last: its presence says the backup is complete.
  IMGPIPE_TRY(WriteFileDurably(o.to / kBackupManifestFile, SerializeBackupManifest(m), 0600));
  return m;
}

Result<BackupManifest> VerifyBackup(const fs::path& from) {
  IMGPIPE_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(from / kBackupManifestFile, 1ull << 30));
  IMGPIPE_ASSIGN_OR_RETURN(BackupManifest m, ParseBackupManifest(text));
  auto check = [&](const fs::path& path, uint64_t bytes, const std::string& sha256, bool check_size) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto digest, DigestFile(path));
    if ((check_size && digest.first != bytes) || digest.second != sha256) {
      return MakeError(ErrorKind::kIntegrity, path.string() + " does not match the backup's manifest (size " +
                                                  std::to_string(digest.first) + ", SHA-256 " + digest.second +
                                                  "; expected " + std::to_string(bytes) + ", " + sha256 +
                                                  "): the backup was altered or damaged; nothing was restored");
    }
    return Ok();
  };
  if (m.has_database) IMGPIPE_TRY(check(from / kBackupDatabaseFile, m.database_bytes, m.database_sha256, true));
  if (m.has_database_key) IMGPIPE_TRY(check(from / kBackupDatabaseKeyFile, 0, m.database_key_sha256, false));
  if (m.has_config) IMGPIPE_TRY(check(from / kBackupConfigFile, 0, m.config_sha256, false));
  if (m.has_keyring) IMGPIPE_TRY(ReadSmallFile(from / kBackupKeyringFile, 16 << 20));
  if (m.blobs_included) {
    for (const BackupBlob& b : m.blobs) {
      IMGPIPE_TRY(check(from / kBackupBlobsFolder / b.container / b.key, b.bytes, b.sha256, true));
    }
  }
  return m;
}

Status RestoreBackup(const fs::path& from, const BackupManifest& m, const RestoreTarget& target, BlobStore* blobs) {
  std::string ring;
  if (m.has_keyring) {
    IMGPIPE_ASSIGN_OR_RETURN(std::string sealed, ReadSmallFile(from / kBackupKeyringFile, 16 << 20));
    IMGPIPE_ASSIGN_OR_RETURN(ring, OpenWithPassphrase(sealed, target.passphrase));
  }
  std::error_code ec;
  auto refuse_existing = [&](const fs::path& path, const char* what) -> Status {
    if (fs::exists(path, ec)) {
      return MakeError(ErrorKind::kConflict, std::string(what) + " " + path.string() +
                                                 " exists; restore only into an empty data folder");
    }
    return Ok();
  };
  if (m.has_database) IMGPIPE_TRY(refuse_existing(target.sqlite_path, "the warehouse"));
  if (m.has_keyring) IMGPIPE_TRY(refuse_existing(target.keyring_path, "the keyring"));
  if (m.has_database) {
    IMGPIPE_ASSIGN_OR_RETURN(std::string db, ReadSmallFile(from / kBackupDatabaseFile, 1ull << 40));
    fs::create_directories(target.sqlite_path.parent_path(), ec);
    IMGPIPE_TRY(WriteFileDurably(target.sqlite_path, db, 0600));
    if (m.has_database_key) {
      IMGPIPE_ASSIGN_OR_RETURN(std::string key, ReadSmallFile(from / kBackupDatabaseKeyFile, 1 << 20));
      IMGPIPE_TRY(WriteFileDurably(DatabaseKeyPath(target.sqlite_path.string()), key, 0600));
    }
  }
  if (m.has_keyring) {
    fs::create_directories(target.keyring_path.parent_path(), ec);
    Status written = WriteFileDurably(target.keyring_path, ring, 0600);
    OPENSSL_cleanse(ring.data(), ring.size());
    IMGPIPE_TRY(written);
  }
  if (m.has_config && !target.config_path.empty()) {
    IMGPIPE_ASSIGN_OR_RETURN(std::string config, ReadSmallFile(from / kBackupConfigFile, 16 << 20));
    IMGPIPE_TRY(WriteFileDurably(target.config_path, config, 0600));
  }
  if (m.blobs_included && blobs != nullptr) {
    std::string buf(kChunk, '\0');
    for (const BackupBlob& b : m.blobs) {
      const fs::path path = from / kBackupBlobsFolder / b.container / b.key;
      std::ifstream in(path, std::ios::binary);
      if (!in) return IoError(path, "cannot read");
      IMGPIPE_ASSIGN_OR_RETURN(auto writer, blobs->OpenWrite(b.container, b.key));
      while (in) {
        in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
        if (in.gcount() > 0) IMGPIPE_TRY(writer->Write(std::string_view(buf.data(), static_cast<size_t>(in.gcount()))));
      }
      IMGPIPE_TRY(writer->Commit());
    }
  }
  return Ok();
}

}  // namespace imgpipe
