#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/clock.hpp"
#include "storage/blob_store.hpp"

namespace imgpipe {

//! kInvalidArgument unless `container` is a known container (originals, renditions, scripts) or a name of 3..63
//! characters of [a-z0-9-] (the Azure and S3 rules' common subset, so the same names work on every backend).
Status ValidateBlobContainer(std::string_view container);

//! A BlobStore on the local filesystem: the object <container>/<key> is the file <root>/<container>/<key>.
//!
//! Durability: a writer streams into a temp file in <root>/.tmp (same filesystem as the objects); Commit() fsyncs it,
//! renames it over the object's path and fsyncs the parent folder, so once Commit() returns the object survives a
//! crash or power loss, and at no time is a partial object visible under its key. A reader keeps the file it opened:
//! an object replaced or deleted while being read is still read whole, as it was.
//!
//! Limits of this backend: a key cannot be both an object and a folder of other objects ("a" and "a/b" in the same
//! container); writing the second gives kConflict. Key segments are at most 255 bytes (the filesystem's name limit).
//!
//! Thread-safe; several processes may share one root (e.g. a gateway and a worker).
class LocalBlobStore final : public BlobStore {
 public:
  //! Creates <root>, <root>/.tmp and the known containers if missing, and removes temp files older than an hour left
  //! by crashed writers (younger ones may belong to another process sharing the root). kUnavailable if the root
  //! cannot be created or written.
  //! `clock`, when given, must outlive the store; objects then record its time as their `created` time (so retention
  //! tests can move time), otherwise the system clock's.
  static Result<std::unique_ptr<LocalBlobStore>> Open(std::string root, const Clock* clock = nullptr);

  Result<std::unique_ptr<BlobWriter>> OpenWrite(std::string_view container, std::string_view key) override;
  //! `range.length` is clamped to the end of the object (so UINT64_MAX reads to the end). kRangeNotSatisfiable if
  //! `range.offset` is at or past the end, except offset 0 of an empty object, which reads nothing.
  Result<std::unique_ptr<BlobReader>> OpenRead(std::string_view container, std::string_view key,
                                               std::optional<ByteRange> range = std::nullopt) override;
  Result<BlobInfo> Stat(std::string_view container, std::string_view key) override;
  //! Removes the object and then its parent folders up to the container while they are empty (best effort).
  Status Delete(std::string_view container, std::string_view key) override;
  //! `continuation` is the last key of the previous page. Keys are compared as bytes.
  Result<ListPage> List(std::string_view container, std::string_view prefix, std::string_view continuation = {},
                        size_t max_items = 1000) override;
  //! Renames `path` into place when it is on the store's filesystem (fsyncing the file, then the folder), so the file
  //! is consumed; otherwise copies it (and leaves `path` as it was).
  Result<BlobInfo> PutFile(std::string_view container, std::string_view key, const std::string& path) override;
  //! PutFile() with the fsyncs of the file and of its folders left to `deferred`.
  Result<BlobInfo> PutFileDeferred(std::string_view container, std::string_view key, const std::string& path,
                                   DeferredSync& deferred) override;
  //! The object's file path if the object exists now.
  std::optional<std::string> LocalPath(std::string_view container, std::string_view key) override;
  //! Ok if a file can be created in the root's temp folder.
  Status Ping() override;
  std::string_view Name() const override { return "local"; }

  const std::string& root() const { return root_; }
  //! The folder holding writers' temp files.
  std::string TempDir() const { return root_ + "/.tmp"; }

 private:
  class Writer;
  class Reader;

  LocalBlobStore(std::string root, const Clock* clock) : root_(std::move(root)), clock_(clock) {}

  //! Validates both names; on success returns <root>/<container>/<key>.
  Result<std::string> ObjectPath(std::string_view container, std::string_view key) const;
  //! Sets the file's times to the commit time, fsyncs it, makes its parent folders and renames it to `target`, then
  //! fsyncs the target's folder; with `deferred`, every fsync is left to it instead. Sets *cross_device when `from`
  //! is on another filesystem (nothing done then).
  Status Publish(int fd, const std::string& from, const std::string& target, std::string_view container,
                 std::string_view key, bool* cross_device, DeferredSync* deferred) const;
  Result<BlobInfo> MoveFile(std::string_view container, std::string_view key, const std::string& path,
                            DeferredSync* deferred);
  Result<BlobInfo> InfoFromFd(int fd, std::string_view container, std::string_view key) const;

  std::string root_;
  const Clock* clock_;
};

}  // namespace imgpipe
