#include "storage/local/local_blob_store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

namespace imgpipe {

namespace {

// Writers gather small Write() calls into this many bytes; a chunk that would overflow the buffer goes to the file
// together with what was gathered, in one writev(2). Per writer, so 16 concurrent uploads hold 4 MiB.
constexpr size_t kWriteBufferBytes = 256 * 1024;
// A writer starts the write-back of every this many bytes it has written, without waiting for it, so the disk works
// while the writer produces the rest and Commit's fsync waits only for the tail. Without it a large object's whole
// write-back starts at the fsync, after all of it was produced (the writer's CPU time and the disk's time added up).
constexpr off_t kWritebackBytes = 2 << 20;
// A temp file untouched for this long belongs to a writer that crashed (writers touch theirs with every write).
constexpr auto kStaleTempAge = std::chrono::hours(1);
// Longest file name on the filesystems we support (NAME_MAX).
constexpr size_t kMaxSegmentBytes = 255;
// A Delete() may remove a folder between a writer creating it and renaming into it; the writer then recreates it.
// Each retry needs a concurrent Delete of a sibling to lose again, so a few are plenty.
constexpr int kPublishAttempts = 32;

std::string Describe(std::string_view container, std::string_view key) {
  return std::string(container) + "/" + std::string(key);
}

//! Maps an errno to an ErrorKind: a full or read-only disk is a dependency being down (retry later may work);
//! anything else we cannot classify.
Error ErrnoError(int err, std::string what) {
  ErrorKind kind = ErrorKind::kInternal;
  switch (err) {
    case ENOSPC:
    case EDQUOT:
    case EROFS:
    case EIO:
      kind = ErrorKind::kUnavailable;
      break;
    default:
      break;
  }
  return MakeError(kind, std::move(what) + ": " + std::strerror(err) + " (errno " + std::to_string(err) + ")");
}

std::string ParentOf(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

//! Writes `first` then `second` (either may be empty) with as few system calls as the kernel allows: one, usually.
//! Returns 0 or an errno.
int WriteAll(int fd, std::string_view first, std::string_view second = {}) {
  while (!first.empty() || !second.empty()) {
    struct iovec parts[2] = {{const_cast<char*>(first.data()), first.size()},
                             {const_cast<char*>(second.data()), second.size()}};
    const bool both = !first.empty() && !second.empty();
    ssize_t n = ::writev(fd, both ? parts : parts + (first.empty() ? 1 : 0), both ? 2 : 1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    auto done = static_cast<size_t>(n);
    const size_t from_first = std::min(done, first.size());
    first.remove_prefix(from_first);
    second.remove_prefix(done - from_first);
  }
  return 0;
}

//! fsync of a folder makes its entries (renames, unlinks, new subfolders) durable.
int FsyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno;
  int rc = ::fsync(fd);
  int err = rc < 0 ? errno : 0;
  ::close(fd);
  return err;
}

//! Creates every folder of `path` below `base` (which must exist), fsyncing the parent of each folder it creates so the
//! folder survives power loss (or leaving that to `deferred`). Returns 0 or an errno.
int MakeDirsBelow(const std::string& base, const std::string& path, DeferredSync* deferred) {
  size_t pos = base.size();
  while (pos < path.size()) {
    size_t next = path.find('/', pos + 1);
    if (next == std::string::npos) next = path.size();
    std::string dir = path.substr(0, next);
    if (::mkdir(dir.c_str(), 0755) == 0) {
      if (deferred) {
        deferred->AddFolder(ParentOf(dir));
      } else if (int err = FsyncDir(ParentOf(dir)); err != 0) {
        return err;
      }
    } else if (errno != EEXIST) {
      return errno;
    }
    pos = next;
  }
  return 0;
}

bool IsSegmentChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
         c == '-';
}

//! True if `name` could be a segment of a valid key; anything else in a container folder is not ours and is skipped.
bool IsKeySegment(std::string_view name) {
  if (name.empty() || name == "." || name == ".." || name.size() > kMaxSegmentBytes) return false;
  return std::all_of(name.begin(), name.end(), IsSegmentChar);
}

std::string MakeEtag(const struct stat& st) {
  char buf[128];
  std::snprintf(buf, sizeof buf, "%llx-%llx-%llx-%llx", static_cast<unsigned long long>(st.st_ino),
                static_cast<unsigned long long>(st.st_size),
                static_cast<unsigned long long>(st.st_mtim.tv_sec) * 1000000000ull +
                    static_cast<unsigned long long>(st.st_mtim.tv_nsec),
                static_cast<unsigned long long>(st.st_ctim.tv_sec) * 1000000000ull +
                    static_cast<unsigned long long>(st.st_ctim.tv_nsec));
  return buf;
}

BlobInfo InfoFromStat(const struct stat& st, std::string_view container, std::string_view key) {
  BlobInfo info;
  info.container = std::string(container);
  info.key = std::string(key);
  info.size = static_cast<uint64_t>(st.st_size);
  info.created = TimePoint(std::chrono::duration_cast<TimePoint::duration>(
      std::chrono::seconds(st.st_mtim.tv_sec) + std::chrono::nanoseconds(st.st_mtim.tv_nsec)));
  info.etag = MakeEtag(st);
  return info;
}

Error NotFound(std::string_view container, std::string_view key) {
  return MakeError(ErrorKind::kNotFound, "no object " + Describe(container, key));
}

//! Creates an empty temp file in `dir`; returns its fd and sets `*path`, or an errno.
int MakeTempFile(const std::string& dir, std::string* path, int* fd_out) {
  std::string tmpl = dir + "/w-XXXXXX";
  int fd = ::mkostemp(tmpl.data(), O_CLOEXEC);
  if (fd < 0) return errno;
  *path = std::move(tmpl);
  *fd_out = fd;
  return 0;
}

}  // namespace

Status ValidateBlobContainer(std::string_view container) {
  if (container == kOriginals || container == kRenditions || container == kScripts) return Ok();
  bool ok = container.size() >= 3 && container.size() <= 63 &&
            std::all_of(container.begin(), container.end(),
                        [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'; });
  if (ok) return Ok();
  return MakeError(ErrorKind::kInvalidArgument,
                   "invalid container name (length " + std::to_string(container.size()) +
                       "); containers are 3..63 characters of [a-z0-9-], e.g. \"originals\"",
                   "invalid_container");
}

// ---------------------------------------------------------------------------------------------------------------------
// Writer

class LocalBlobStore::Writer final : public BlobWriter {
 public:
  Writer(const LocalBlobStore* store, std::string container, std::string key, std::string target, std::string tmp,
         int fd)
      : store_(store),
        container_(std::move(container)),
        key_(std::move(key)),
        target_(std::move(target)),
        tmp_(std::move(tmp)),
        fd_(fd) {}

  ~Writer() override { Abort(); }

  Status Write(std::string_view data) override {
    if (fd_ < 0) return Finished();
    if (buffer_.size() + data.size() > kWriteBufferBytes) {
      // What was gathered and the new chunk go out in one system call, without copying the chunk into the buffer.
      IMGPIPE_TRY(WriteThrough(buffer_, data));
      buffer_.clear();
      return Ok();
    }
    if (buffer_.capacity() < kWriteBufferBytes) buffer_.reserve(kWriteBufferBytes);
    buffer_.append(data);
    return Ok();
  }

  Result<BlobInfo> Commit() override { return Publish(nullptr); }
  Result<BlobInfo> CommitDeferred(DeferredSync& deferred) override { return Publish(&deferred); }

  void Abort() override {
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
    if (!tmp_.empty()) {
      ::unlink(tmp_.c_str());
      tmp_.clear();
    }
    buffer_ = std::string();
  }

 private:
  Result<BlobInfo> Publish(DeferredSync* deferred) {
    if (fd_ < 0) return Finished();
    IMGPIPE_TRY(Flush());
    bool cross_device = false;
    if (auto s = store_->Publish(fd_, tmp_, target_, container_, key_, &cross_device, deferred); !s.ok()) {
      Abort();
      return s.error();
    }
    // The temp name is gone now; only the fd remains to close.
    tmp_.clear();
    auto info = store_->InfoFromFd(fd_, container_, key_);
    ::close(fd_);
    fd_ = -1;
    committed_ = true;
    return info;
  }

  Status Flush() {
    if (buffer_.empty()) return Ok();
    IMGPIPE_TRY(WriteThrough(buffer_));
    buffer_.clear();
    return Ok();
  }

  Status WriteThrough(std::string_view first, std::string_view second = {}) {
    if (int err = WriteAll(fd_, first, second); err != 0) return FailWrite(err);
    written_ += static_cast<off_t>(first.size() + second.size());
    if (written_ - writeback_from_ >= kWritebackBytes) {
      // Advice only: a failure here shows up at Commit's fsync, which is what makes the object durable.
      ::sync_file_range(fd_, writeback_from_, written_ - writeback_from_, SYNC_FILE_RANGE_WRITE);
      writeback_from_ = written_;
    }
    return Ok();
  }

  Error FailWrite(int err) {
    Abort();
    return ErrnoError(err, "writing " + Describe(container_, key_));
  }

  Error Finished() const {
    return MakeError(ErrorKind::kInternal,
                     "writer for " + Describe(container_, key_) + " was already " +
                         (committed_ ? "committed" : "aborted after an error or by its owner"));
  }

  const LocalBlobStore* store_;
  std::string container_;
  std::string key_;
  std::string target_;
  std::string tmp_;  // empty once committed or aborted
  int fd_;           // -1 once committed or aborted
  bool committed_ = false;
  std::string buffer_;
  off_t written_ = 0;         // bytes written to fd_
  off_t writeback_from_ = 0;  // write-back was started for the bytes before this
};

// ---------------------------------------------------------------------------------------------------------------------
// Reader

class LocalBlobStore::Reader final : public BlobReader {
 public:
  Reader(int fd, BlobInfo info, uint64_t begin, uint64_t end) : fd_(fd), info_(std::move(info)), pos_(begin), end_(end) {
    ::posix_fadvise(fd_, static_cast<off_t>(begin), static_cast<off_t>(end - begin), POSIX_FADV_SEQUENTIAL);
  }
  ~Reader() override { ::close(fd_); }

  Result<size_t> Read(std::span<char> buf) override {
    if (pos_ >= end_ || buf.empty()) return size_t{0};
    size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), end_ - pos_));
    for (;;) {
      ssize_t n = ::pread(fd_, buf.data(), want, static_cast<off_t>(pos_));
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoError(errno, "reading " + Describe(info_.container, info_.key));
      }
      // Objects are never changed in place, so a short file here means someone else truncated it; report the end.
      if (n == 0) pos_ = end_;
      pos_ += static_cast<uint64_t>(n);
      return static_cast<size_t>(n);
    }
  }

  const BlobInfo& Info() const override { return info_; }
  int LocalFd() const override { return fd_; }

 private:
  int fd_;
  BlobInfo info_;
  uint64_t pos_;
  uint64_t end_;
};

// ---------------------------------------------------------------------------------------------------------------------
// Store

Result<std::unique_ptr<LocalBlobStore>> LocalBlobStore::Open(std::string root, const Clock* clock) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path abs = fs::absolute(fs::path(root), ec);
  if (ec) return MakeError(ErrorKind::kUnavailable, "blob store root \"" + root + "\": " + ec.message());
  std::string abs_root = abs.lexically_normal().string();
  while (abs_root.size() > 1 && abs_root.back() == '/') abs_root.pop_back();

  for (std::string dir : {abs_root, abs_root + "/.tmp", abs_root + "/" + std::string(kOriginals),
                          abs_root + "/" + std::string(kRenditions), abs_root + "/" + std::string(kScripts)}) {
    fs::create_directories(dir, ec);
    if (ec) {
      return MakeError(ErrorKind::kUnavailable, "cannot create blob store folder \"" + dir + "\": " + ec.message() +
                                                    "; check storage.data_dir and its permissions");
    }
  }

  auto store = std::unique_ptr<LocalBlobStore>(new LocalBlobStore(abs_root, clock));

  // Remove temp files of writers that crashed long ago. Best effort: a file we cannot remove is harmless.
  const std::string tmp_dir = store->TempDir();
  if (DIR* d = ::opendir(tmp_dir.c_str())) {
    const auto now = std::chrono::system_clock::now();
    while (struct dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      struct stat st;
      if (::fstatat(::dirfd(d), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) continue;
      auto mtime = TimePoint(std::chrono::duration_cast<TimePoint::duration>(std::chrono::seconds(st.st_mtim.tv_sec)));
      if (now - mtime > kStaleTempAge) ::unlinkat(::dirfd(d), name.c_str(), 0);
    }
    ::closedir(d);
  }

  IMGPIPE_TRY(store->Ping());
  return store;
}

Result<std::string> LocalBlobStore::ObjectPath(std::string_view container, std::string_view key) const {
  IMGPIPE_TRY(ValidateBlobContainer(container));
  IMGPIPE_TRY(ValidateBlobKey(key));
  size_t start = 0;
  while (start <= key.size()) {
    size_t end = key.find('/', start);
    if (end == std::string_view::npos) end = key.size();
    if (end - start > kMaxSegmentBytes) {
      return MakeError(ErrorKind::kInvalidArgument,
                       "invalid blob key: a segment is " + std::to_string(end - start) +
                           " bytes; the local store allows at most " + std::to_string(kMaxSegmentBytes),
                       "invalid_key");
    }
    start = end + 1;
  }
  return root_ + "/" + std::string(container) + "/" + std::string(key);
}

Status LocalBlobStore::Publish(int fd, const std::string& from, const std::string& target,
                               std::string_view container, std::string_view key, bool* cross_device,
                               DeferredSync* deferred) const {
  // The commit time becomes the object's `created` time. Best effort for files handed to PutFile that we may not
  // be allowed to touch: they then keep their own mtime.
  if (clock_ != nullptr) {
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(clock_->Now().time_since_epoch()).count();
    struct timespec ts[2];
    ts[0].tv_sec = ts[1].tv_sec = static_cast<time_t>(ns / 1000000000);
    ts[0].tv_nsec = ts[1].tv_nsec = static_cast<long>(ns % 1000000000);
    ::futimens(fd, ts);
  } else {
    ::futimens(fd, nullptr);
  }
  if (deferred) {
    // Starts the write-back now, without waiting for it, so the deferred sync mostly finds it done.
    ::sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
  } else if (::fsync(fd) != 0) {
    return ErrnoError(errno, "syncing " + Describe(container, key));
  }

  const std::string container_dir = root_ + "/" + std::string(container);
  const std::string parent = ParentOf(target);
  for (int attempt = 1;; ++attempt) {
    // Containers other than the known ones are created on first write.
    if (::mkdir(container_dir.c_str(), 0755) == 0) {
      if (int err = FsyncDir(root_); err != 0) return ErrnoError(err, "syncing blob store root");
    } else if (errno != EEXIST) {
      return ErrnoError(errno, "creating container " + std::string(container));
    }
    int err = MakeDirsBelow(container_dir, parent, deferred);
    if (err == 0 && ::rename(from.c_str(), target.c_str()) == 0) break;
    if (err == 0) err = errno;
    if (err == ENOENT && attempt < kPublishAttempts) continue;  // a concurrent Delete removed an empty folder
    if (err == EXDEV) *cross_device = true;
    if (err == ENOTDIR || err == EISDIR || err == EEXIST || err == ENOTEMPTY) {
      return MakeError(ErrorKind::kConflict,
                       "cannot store " + Describe(container, key) +
                           ": a part of the key is already an object, or the key is a folder of other objects; the "
                           "local store cannot hold both \"a\" and \"a/b\"");
    }
    return ErrnoError(err, "storing " + Describe(container, key));
  }
  if (deferred) {
    deferred->AddFile(target);
    deferred->AddFolder(parent);
    return Ok();
  }
  if (int err = FsyncDir(parent); err != 0) return ErrnoError(err, "syncing the folder of " + Describe(container, key));
  return Ok();
}

Result<BlobInfo> LocalBlobStore::InfoFromFd(int fd, std::string_view container, std::string_view key) const {
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoError(errno, "stat of " + Describe(container, key));
  return InfoFromStat(st, container, key);
}

Result<std::unique_ptr<BlobWriter>> LocalBlobStore::OpenWrite(std::string_view container, std::string_view key) {
  IMGPIPE_ASSIGN_OR_RETURN(std::string target, ObjectPath(container, key));
  std::string tmp;
  int fd = -1;
  if (int err = MakeTempFile(TempDir(), &tmp, &fd); err != 0) {
    return ErrnoError(err, "creating a temp file for " + Describe(container, key));
  }
  return std::unique_ptr<BlobWriter>(
      new Writer(this, std::string(container), std::string(key), std::move(target), std::move(tmp), fd));
}

Result<std::unique_ptr<BlobReader>> LocalBlobStore::OpenRead(std::string_view container, std::string_view key,
                                                             std::optional<ByteRange> range) {
  IMGPIPE_ASSIGN_OR_RETURN(std::string path, ObjectPath(container, key));
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT || errno == ENOTDIR) return NotFound(container, key);
    return ErrnoError(errno, "opening " + Describe(container, key));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoError(err, "stat of " + Describe(container, key));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return NotFound(container, key);
  }
  BlobInfo info = InfoFromStat(st, container, key);
  uint64_t begin = 0;
  uint64_t end = info.size;
  if (range) {
    bool empty_at_zero = info.size == 0 && range->offset == 0;
    if (range->offset >= info.size && !empty_at_zero) {
      ::close(fd);
      return MakeError(ErrorKind::kRangeNotSatisfiable,
                       "range starts at byte " + std::to_string(range->offset) + " but " + Describe(container, key) +
                           " is " + std::to_string(info.size) + " bytes");
    }
    begin = range->offset;
    end = begin + std::min(range->length, info.size - begin);
  }
  return std::unique_ptr<BlobReader>(new Reader(fd, std::move(info), begin, end));
}

Result<BlobInfo> LocalBlobStore::Stat(std::string_view container, std::string_view key) {
  IMGPIPE_ASSIGN_OR_RETURN(std::string path, ObjectPath(container, key));
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return NotFound(container, key);
    return ErrnoError(errno, "stat of " + Describe(container, key));
  }
  if (!S_ISREG(st.st_mode)) return NotFound(container, key);
  return InfoFromStat(st, container, key);
}

Status LocalBlobStore::Delete(std::string_view container, std::string_view key) {
  IMGPIPE_ASSIGN_OR_RETURN(std::string path, ObjectPath(container, key));
  if (::unlink(path.c_str()) != 0) {
    // Missing, or a folder of other objects (so not an object): nothing to delete.
    if (errno == ENOENT || errno == ENOTDIR || errno == EISDIR) return Ok();
    return ErrnoError(errno, "deleting " + Describe(container, key));
  }
  std::string dir = ParentOf(path);
  // Make the removal durable: retention must be provable after a crash too. ENOENT: a concurrent Delete of a sibling
  // already removed the (then empty) folder, so there is no entry left to sync.
  if (int err = FsyncDir(dir); err != 0 && err != ENOENT) {
    return ErrnoError(err, "syncing the folder of " + Describe(container, key));
  }
  // Best effort: rmdir fails on the first folder that is not empty (or that a writer just filled), which is fine.
  const std::string container_dir = root_ + "/" + std::string(container);
  while (dir.size() > container_dir.size() && ::rmdir(dir.c_str()) == 0) dir = ParentOf(dir);
  return Ok();
}

namespace {

struct ListWalk {
  std::string_view container;
  std::string_view prefix;
  std::string_view continuation;
  size_t want;  // max_items + 1, to learn whether another page follows
  std::vector<BlobInfo> items;

  bool Full() const { return items.size() >= want; }

  // Visits `dir`, whose objects have keys starting with `key_prefix` ("" or "a/b/"), in key order.
  Status Visit(const std::string& dir, const std::string& key_prefix) {
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) {
      // A folder removed by a concurrent Delete (or a container never written) holds nothing.
      if (errno == ENOENT || errno == ENOTDIR) return Ok();
      return ErrnoError(errno, "listing " + std::string(container) + "/" + key_prefix);
    }
    struct Entry {
      std::string sort_name;  // name, plus '/' for folders, so byte order of names matches byte order of keys
      bool is_dir;
    };
    std::vector<Entry> entries;
    while (struct dirent* e = ::readdir(d)) {
      std::string_view name = e->d_name;
      if (!IsKeySegment(name)) continue;
      unsigned char type = e->d_type;
      if (type == DT_UNKNOWN) {
        struct stat st;
        if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
        type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG : DT_UNKNOWN;
      }
      if (type == DT_DIR) entries.push_back({std::string(name) + "/", true});
      if (type == DT_REG) entries.push_back({std::string(name), false});
    }
    std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.sort_name < b.sort_name; });

    Status status;
    for (const Entry& entry : entries) {
      if (Full()) break;
      std::string key = key_prefix + entry.sort_name;
      if (entry.is_dir) {
        // Every key below starts with `key`: skip the folder if none of them can match the prefix, or if all of them
        // sort at or before the continuation key.
        bool prefix_possible = key.starts_with(prefix) || prefix.starts_with(key);
        bool after_continuation = continuation.empty() || continuation.starts_with(key) || key > continuation;
        if (!prefix_possible || !after_continuation) continue;
        status = Visit(dir + "/" + entry.sort_name.substr(0, entry.sort_name.size() - 1), key);
        if (!status.ok()) break;
        continue;
      }
      if (!key.starts_with(prefix) || (!continuation.empty() && key <= continuation)) continue;
      struct stat st;
      if (::fstatat(::dirfd(d), entry.sort_name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) {
        continue;  // deleted or replaced since readdir
      }
      items.push_back(InfoFromStat(st, container, key));
    }
    ::closedir(d);
    return status;
  }
};

}  // namespace

Result<ListPage> LocalBlobStore::List(std::string_view container, std::string_view prefix,
                                      std::string_view continuation, size_t max_items) {
  IMGPIPE_TRY(ValidateBlobContainer(container));
  if (max_items == 0) return MakeError(ErrorKind::kInvalidArgument, "List needs max_items of at least 1");
  ListWalk walk{container, prefix, continuation, max_items + 1, {}};
  IMGPIPE_TRY(walk.Visit(root_ + "/" + std::string(container), ""));
  ListPage page;
  page.items = std::move(walk.items);
  if (page.items.size() > max_items) {
    page.items.resize(max_items);
    page.continuation = page.items.back().key;
  }
  return page;
}

Result<BlobInfo> LocalBlobStore::PutFile(std::string_view container, std::string_view key, const std::string& path) {
  return MoveFile(container, key, path, nullptr);
}

Result<BlobInfo> LocalBlobStore::PutFileDeferred(std::string_view container, std::string_view key,
                                                 const std::string& path, DeferredSync& deferred) {
  return MoveFile(container, key, path, &deferred);
}

Result<BlobInfo> LocalBlobStore::MoveFile(std::string_view container, std::string_view key, const std::string& path,
                                          DeferredSync* deferred) {
  IMGPIPE_ASSIGN_OR_RETURN(std::string target, ObjectPath(container, key));
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) {
      return MakeError(ErrorKind::kNotFound, "no file to store as " + Describe(container, key));
    }
    return ErrnoError(err, "opening the file to store as " + Describe(container, key));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return MakeError(ErrorKind::kInvalidArgument, "the file to store as " + Describe(container, key) +
                                                      " is not a regular file");
  }
  bool cross_device = false;
  Status published = Publish(fd, path, target, container, key, &cross_device, deferred);
  if (published.ok()) {
    auto info = InfoFromFd(fd, container, key);
    ::close(fd);
    return info;
  }
  ::close(fd);
  // Another filesystem (EXDEV): copy through a temp file instead; the copy is as durable as any write.
  if (cross_device) {
    return deferred ? BlobStore::PutFileDeferred(container, key, path, *deferred)
                    : BlobStore::PutFile(container, key, path);
  }
  return published.error();
}

std::optional<std::string> LocalBlobStore::LocalPath(std::string_view container, std::string_view key) {
  auto path = ObjectPath(container, key);
  if (!path.ok()) return std::nullopt;
  struct stat st;
  if (::stat(path->c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  return *path;
}

Status LocalBlobStore::Ping() {
  std::string tmp;
  int fd = -1;
  if (int err = MakeTempFile(TempDir(), &tmp, &fd); err != 0) {
    Error e = ErrnoError(err, "blob store root " + root_ + " is not writable");
    e.kind = ErrorKind::kUnavailable;
    return e;
  }
  ::close(fd);
  ::unlink(tmp.c_str());
  return Ok();
}

}  // namespace imgpipe
