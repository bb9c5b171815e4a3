#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.hpp"
#include "core/result.hpp"

namespace imgpipe {

//! The containers imgpipe writes. Each has its own retention policy (see RetentionPolicy).
inline constexpr std::string_view kOriginals = "originals";
inline constexpr std::string_view kRenditions = "renditions";
inline constexpr std::string_view kScripts = "scripts";

struct BlobInfo {
  std::string container;
  std::string key;
  uint64_t size = 0;
  TimePoint created;   //!< when the object became visible
  std::string etag;    //!< changes whenever the content changes
};

//! Half-open byte range [offset, offset + length).
struct ByteRange {
  uint64_t offset = 0;
  uint64_t length = 0;
};

//! Sequential reader of one object (or a range of it). Not thread-safe.
class BlobReader {
 public:
  virtual ~BlobReader() = default;
  //! Reads up to buf.size() bytes; returns 0 at the end.
  virtual Result<size_t> Read(std::span<char> buf) = 0;
  virtual const BlobInfo& Info() const = 0;
  //! The open file behind this reader when the backend reads a local file, else -1. The descriptor is of the whole
  //! object (not only a requested range), stays owned by the reader and is valid while it lives. Lets a decrypting
  //! reader map the ciphertext instead of copying it.
  virtual int LocalFd() const { return -1; }
};

//! The syncs that writers were allowed to defer, so that a batch of writes is made durable in one pass (a group
//! commit: the disk completes the flushes of many files and folders together) instead of one object at a time. A
//! write that defers (BlobWriter::CommitDeferred, BlobStore::PutFileDeferred) has made its object visible and whole
//! for readers, but not durable: until Sync() returns ok, a crash or power loss may leave no object under the key,
//! or one with only part of its bytes. Only callers that would write the same object again after such a crash
//! (deterministic keys, nothing acknowledged before Sync) may defer. Backends whose commit is durable by itself
//! (Azure, S3) add nothing. Not thread-safe; one per batch.
class DeferredSync {
 public:
  //! Records that local file `path` must be synced.
  void AddFile(std::string path) { files_.insert(std::move(path)); }
  //! Records that the entries of local folder `folder` must be synced.
  void AddFolder(std::string folder) { folders_.insert(std::move(folder)); }
  void Merge(const DeferredSync& other) {
    files_.insert(other.files_.begin(), other.files_.end());
    folders_.insert(other.folders_.begin(), other.folders_.end());
  }
  //! Makes every deferred write durable: one fsync per file and per folder, several at a time. kUnavailable naming
  //! the path if one fails (also if a file is gone); everything stays recorded, so a retry syncs it all again.
  Status Sync() const;
  const std::set<std::string>& files() const { return files_; }
  const std::set<std::string>& folders() const { return folders_; }

 private:
  std::set<std::string> files_;
  std::set<std::string> folders_;
};

//! Writer of one object. The object is visible only after Commit() returns ok; a crash, an error or Abort() before
//! leaves nothing under the key (an earlier object under the same key stays intact until Commit replaces it).
//! Destroying an uncommitted writer aborts it. Not thread-safe.
class BlobWriter {
 public:
  virtual ~BlobWriter() = default;
  virtual Status Write(std::string_view data) = 0;
  //! Makes the object durable and visible, replacing any object under the same key.
  virtual Result<BlobInfo> Commit() = 0;
  //! Commit(), except that the object may become durable only when `deferred.Sync()` returns (see DeferredSync).
  //! The default commits durably and adds nothing.
  virtual Result<BlobInfo> CommitDeferred(DeferredSync& deferred) { return Commit(); }
  virtual void Abort() = 0;
};

struct ListPage {
  std::vector<BlobInfo> items;      //!< sorted by key
  std::string continuation;         //!< empty when this is the last page
};

//! Where objects live. Implementations: LocalBlobStore (src/storage/local); Azure and S3 come later. All methods are
//! thread-safe. Keys are relative paths of [A-Za-z0-9._-] segments separated by '/'; no empty, "." or ".." segments,
//! at most 1024 bytes (ValidateBlobKey); containers are fixed lowercase names.
class BlobStore {
 public:
  virtual ~BlobStore() = default;

  virtual Result<std::unique_ptr<BlobWriter>> OpenWrite(std::string_view container, std::string_view key) = 0;
  //! Opens the whole object, or `range` of it; kRangeNotSatisfiable if the range starts past the end.
  virtual Result<std::unique_ptr<BlobReader>> OpenRead(std::string_view container, std::string_view key,
                                                       std::optional<ByteRange> range = std::nullopt) = 0;
  virtual Result<BlobInfo> Stat(std::string_view container, std::string_view key) = 0;
  //! Deleting a missing object is ok (idempotent).
  virtual Status Delete(std::string_view container, std::string_view key) = 0;
  //! Lists objects whose key starts with `prefix`, in key order, at most `max_items` per page.
  virtual Result<ListPage> List(std::string_view container, std::string_view prefix,
                                std::string_view continuation = {}, size_t max_items = 1000) = 0;
  //! Moves a local file (which the store may consume) into the store as one object. The default implementation
  //! streams it through OpenWrite; the local backend renames it when on the same filesystem.
  virtual Result<BlobInfo> PutFile(std::string_view container, std::string_view key, const std::string& path);
  //! PutFile(), except that the object may become durable only when `deferred.Sync()` returns (see DeferredSync).
  //! The default streams the file through OpenWrite and CommitDeferred.
  virtual Result<BlobInfo> PutFileDeferred(std::string_view container, std::string_view key, const std::string& path,
                                           DeferredSync& deferred);
  //! The object's path on the local filesystem when the backend keeps it there (local backend), so libvips can read
  //! it directly; nullopt for remote backends (callers then spool it through OpenRead).
  virtual std::optional<std::string> LocalPath(std::string_view container, std::string_view key) {
    return std::nullopt;
  }
  //! Cheap check that the store is usable, for /readyz.
  virtual Status Ping() = 0;
  //! A short name for logs and metrics ("local", "azure", "s3").
  virtual std::string_view Name() const = 0;

  // Conveniences over the primitives above.
  //! Writes `data` as one object; with `deferred`, committed with CommitDeferred (see DeferredSync).
  Result<BlobInfo> Put(std::string_view container, std::string_view key, std::string_view data,
                       DeferredSync* deferred = nullptr);
  Result<std::string> GetAll(std::string_view container, std::string_view key, size_t max_bytes);

 private:
  // The default PutFile and PutFileDeferred: streams `path` through OpenWrite, committing with `deferred` if given.
  Result<BlobInfo> CopyFile(std::string_view container, std::string_view key, const std::string& path,
                            DeferredSync* deferred);
};

//! kInvalidArgument naming the problem if `key` is not a valid blob key.
Status ValidateBlobKey(std::string_view key);

}  // namespace imgpipe
