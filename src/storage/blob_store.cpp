#include "storage/blob_store.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace imgpipe {

namespace {

constexpr size_t kMaxKeyBytes = 1024;
// Chunk size for streaming a local file into a writer: large enough to amortise syscalls, small enough that many
// concurrent copies stay within the memory budget.
constexpr size_t kCopyChunkBytes = 1 << 20;
// Threads of one DeferredSync::Sync(): enough to keep a disk's queue full, few enough to start cheaply per batch.
constexpr size_t kSyncThreads = 8;

bool IsKeyChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
         c == '-';
}

// A printable description of byte `c` for error messages; never echoes control bytes raw.
std::string DescribeByte(char c) {
  auto u = static_cast<unsigned char>(c);
  if (u >= 0x20 && u < 0x7f) return std::string("'") + c + "'";
  static constexpr char kHex[] = "0123456789abcdef";
  return std::string("byte 0x") + kHex[u >> 4] + kHex[u & 0xf];
}

Error KeyError(std::string what) {
  return MakeError(ErrorKind::kInvalidArgument, "invalid blob key: " + std::move(what) +
                                                    "; keys are '/'-separated segments of [A-Za-z0-9._-]",
                   "invalid_key");
}

}  // namespace

Status ValidateBlobKey(std::string_view key) {
  if (key.empty()) return KeyError("the key is empty");
  if (key.size() > kMaxKeyBytes) {
    return KeyError("the key is " + std::to_string(key.size()) + " bytes, over the limit of " +
                    std::to_string(kMaxKeyBytes));
  }
  if (key.front() == '/') return KeyError("the key starts with '/'");
  size_t segment_start = 0;
  for (size_t i = 0; i <= key.size(); ++i) {
    if (i == key.size() || key[i] == '/') {
      std::string_view segment = key.substr(segment_start, i - segment_start);
      if (segment.empty()) return KeyError("empty segment at byte " + std::to_string(i));
      if (segment == "." || segment == "..") {
        return KeyError("segment \"" + std::string(segment) + "\" at byte " + std::to_string(segment_start));
      }
      segment_start = i + 1;
      continue;
    }
    if (!IsKeyChar(key[i])) return KeyError(DescribeByte(key[i]) + " at byte " + std::to_string(i));
  }
  return Ok();
}

Result<BlobInfo> BlobStore::Put(std::string_view container, std::string_view key, std::string_view data,
                                DeferredSync* deferred) {
  IMGPIPE_ASSIGN_OR_RETURN(auto writer, OpenWrite(container, key));
  if (auto s = writer->Write(data); !s.ok()) {
    writer->Abort();
    return s.error();
  }
  return deferred ? writer->CommitDeferred(*deferred) : writer->Commit();
}

Result<std::string> BlobStore::GetAll(std::string_view container, std::string_view key, size_t max_bytes) {
  IMGPIPE_ASSIGN_OR_RETURN(auto reader, OpenRead(container, key));
  const uint64_t size = reader->Info().size;
  auto too_large = [&](uint64_t at_least) {
    return MakeError(ErrorKind::kTooLarge, std::string(container) + "/" + std::string(key) + " is " +
                                               (at_least > size ? "over " : "") + std::to_string(at_least) +
                                               " bytes; the limit for reading it whole is " +
                                               std::to_string(max_bytes) + " bytes; stream it with OpenRead");
  };
  if (size > max_bytes) return too_large(size);
  std::string out;
  out.reserve(static_cast<size_t>(size));
  // Read until the reader says end-of-object; the size check above is repeated per chunk because a backend's reported
  // size is advisory and the cap must hold whatever the reader yields.
  char buf[64 * 1024];
  for (;;) {
    IMGPIPE_ASSIGN_OR_RETURN(size_t n, reader->Read(std::span<char>(buf, sizeof buf)));
    if (n == 0) break;
    if (out.size() + n > max_bytes) return too_large(out.size() + n);
    out.append(buf, n);
  }
  return out;
}

Status DeferredSync::Sync() const {
  // Several threads at once: a disk completes concurrent flushes together, so a batch costs little more than one
  // sync, where one after the other it would cost one each. Files first, then folders: a folder's sync then also
  // covers what the files' syncs allocated.
  for (const auto* paths : {&files_, &folders_}) {
    const std::vector<std::string> list(paths->begin(), paths->end());
    const int flags = O_RDONLY | O_CLOEXEC | (paths == &folders_ ? O_DIRECTORY : 0);
    std::vector<int> errors(list.size(), 0);
    std::atomic<size_t> next{0};
    auto sync_some = [&] {
      for (size_t i = next++; i < list.size(); i = next++) {
        int fd = ::open(list[i].c_str(), flags);
        errors[i] = fd < 0 ? errno : 0;
        if (fd >= 0 && ::fsync(fd) != 0) errors[i] = errno;
        if (fd >= 0) ::close(fd);
      }
    };
    std::vector<std::thread> helpers;
    for (size_t t = 1; t < std::min(list.size(), kSyncThreads); ++t) helpers.emplace_back(sync_some);
    sync_some();
    for (auto& t : helpers) t.join();
    for (size_t i = 0; i < list.size(); ++i) {
      if (errors[i] != 0) {
        return MakeError(ErrorKind::kUnavailable, "cannot sync the stored blob " + list[i] + ": " +
                                                      std::strerror(errors[i]) + "; is the disk failing?");
      }
    }
  }
  return Ok();
}

Result<BlobInfo> BlobStore::PutFile(std::string_view container, std::string_view key, const std::string& path) {
  return CopyFile(container, key, path, nullptr);
}

Result<BlobInfo> BlobStore::PutFileDeferred(std::string_view container, std::string_view key, const std::string& path,
                                            DeferredSync& deferred) {
  return CopyFile(container, key, path, &deferred);
}

Result<BlobInfo> BlobStore::CopyFile(std::string_view container, std::string_view key, const std::string& path,
                                     DeferredSync* deferred) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    return MakeError(err == ENOENT ? ErrorKind::kNotFound : ErrorKind::kInternal,
                     "cannot open file to store as " + std::string(container) + "/" + std::string(key) + ": " +
                         std::strerror(err));
  }
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};

  IMGPIPE_ASSIGN_OR_RETURN(auto writer, OpenWrite(container, key));
  std::vector<char> buf(kCopyChunkBytes);
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      writer->Abort();
      return MakeError(ErrorKind::kInternal, "reading file to store as " + std::string(container) + "/" +
                                                 std::string(key) + ": " + std::strerror(err));
    }
    if (n == 0) break;
    if (auto s = writer->Write(std::string_view(buf.data(), static_cast<size_t>(n))); !s.ok()) {
      writer->Abort();
      return s.error();
    }
  }
  return deferred ? writer->CommitDeferred(*deferred) : writer->Commit();
}

}  // namespace imgpipe
