#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/result.hpp"

namespace imgpipe {

//! A read-only memory mapping of part of a file, unmapped when destroyed.
//!
//! Why: decrypting straight from the page cache saves the copy a read() makes, which costs about as much as the
//! AES-GCM work itself on a large encrypted original. The danger of a mapping is that touching a page past the end of
//! a file that another process cut short raises SIGBUS; Copy() and Guarded() turn that into an error for the caller
//! (kIntegrity) instead of a crash, so a mapping is as safe as a read().
class MappedFile {
 public:
  //! Maps bytes [offset, offset + length) of the open file `fd` (length > 0; the caller knows the file is that long,
  //! e.g. from fstat). `fd` may be closed afterwards. kInternal if mmap fails.
  static Result<MappedFile> Map(int fd, uint64_t offset, size_t length, const std::string& what);
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  //! The mapped bytes: byte `offset` of the file is data()[0]. Touch them only inside Guarded().
  const char* data() const { return data_; }
  size_t size() const { return size_; }

  //! Runs fn(arg); returns false if fn touched a page of this mapping that no longer has a file page behind it (the
  //! file was truncated from outside while mapped). fn is abandoned at that point: it must hold no lock and own
  //! nothing that needs a destructor (a decryption into a caller's buffer qualifies; the caller wipes that buffer).
  //! A SIGBUS from anywhere else goes on to the handler that was installed before, or kills the process as usual.
  bool Guarded(void (*fn)(void*), void* arg) const;

 private:
  MappedFile(void* base, size_t base_size, const char* data, size_t size)
      : base_(base), base_size_(base_size), data_(data), size_(size) {}

  void* base_ = nullptr;  // page-aligned start of the mapping
  size_t base_size_ = 0;
  const char* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace imgpipe
