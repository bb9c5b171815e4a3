#include "crypto/encrypted_blob_store.hpp"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "crypto/mapped_file.hpp"

namespace imgpipe {

namespace {

std::string Where(std::string_view container, std::string_view key) {
  return std::string(container) + "/" + std::string(key);
}

// `e`, its message prefixed with the object it is about.
Error About(std::string_view container, std::string_view key, Error e) {
  e.message = Where(container, key) + ": " + e.message;
  return e;
}

// Reads until at least `need` bytes or the end of the reader, taking up to `room` (>= need) of what each inner read
// delivers; returns how many were read.
Result<size_t> ReadAtLeast(BlobReader& reader, char* out, size_t need, size_t room) {
  size_t got = 0;
  while (got < need) {
    IMGPIPE_ASSIGN_OR_RETURN(size_t n, reader.Read(std::span<char>(out + got, room - got)));
    if (n == 0) break;
    got += n;
  }
  return got;
}

// Reads until `want` bytes or the end of the reader; returns how many were read.
Result<size_t> ReadFully(BlobReader& reader, char* out, size_t want) { return ReadAtLeast(reader, out, want, want); }

Error Truncated(std::string_view container, std::string_view key, uint64_t index) {
  return MakeError(ErrorKind::kIntegrity,
                   Where(container, key) + ": segment " + std::to_string(index) +
                       " is cut short (the stored object is shorter than its size says)",
                   "integrity_error");
}

}  // namespace

Result<EnvelopeHeader> NewEnvelopeHeader(KeyProvider& provider, const DataKey& key, std::string_view container,
                                         std::string_view object_key) {
  EnvelopeHeader header;
  if (RAND_bytes(header.nonce_prefix.data(), static_cast<int>(header.nonce_prefix.size())) != 1) {
    return MakeError(ErrorKind::kInternal, "no randomness for a nonce prefix (RAND_bytes failed)");
  }
  IMGPIPE_ASSIGN_OR_RETURN(header.wrapped, provider.Wrap(key, WrapAad(header, container, object_key)));
  return header;
}

// ---------------------------------------------------------------------------------------------------------------------

class EncryptedBlobStore::Writer final : public BlobWriter {
 public:
  Writer(std::unique_ptr<BlobWriter> inner, std::unique_ptr<SegmentCipher> cipher)
      : inner_(std::move(inner)), cipher_(std::move(cipher)) {
    plain_.reserve(kSegmentBytes);
  }
  ~Writer() override {
    if (!done_) inner_->Abort();
  }

  Status Write(std::string_view data) override {
    if (done_) return MakeError(ErrorKind::kInternal, "write after commit or abort");
    while (!data.empty()) {
      if (plain_.size() == kSegmentBytes) IMGPIPE_TRY(Flush(plain_, /*last=*/false));
      // More data follows a full segment taken straight from `data`, so it cannot be the last: seal it in place.
      if (plain_.empty() && data.size() > kSegmentBytes) {
        IMGPIPE_TRY(Flush(data.substr(0, kSegmentBytes), false));
        data.remove_prefix(kSegmentBytes);
        continue;
      }
      size_t take = std::min<size_t>(kSegmentBytes - plain_.size(), data.size());
      plain_.append(data.substr(0, take));
      data.remove_prefix(take);
    }
    return Ok();
  }

  Result<BlobInfo> Commit() override { return Seal(nullptr); }
  Result<BlobInfo> CommitDeferred(DeferredSync& deferred) override { return Seal(&deferred); }

  void Abort() override {
    if (done_) return;
    done_ = true;
    inner_->Abort();
  }

 private:
  // Sealed segments are gathered and written kWriteSegments at a time: one write of a segment each cost a system call
  // (local files) or a body chunk (cloud stores) per 64 KiB. An object of one segment never needs more than one.
  static constexpr size_t kWriteSegments = 16;

  Result<BlobInfo> Seal(DeferredSync* deferred) {
    if (done_) return MakeError(ErrorKind::kInternal, "commit after commit or abort");
    Status flushed = Flush(plain_, /*last=*/true);
    if (flushed.ok()) flushed = WriteOut();
    if (!flushed.ok()) {
      Abort();
      return flushed.error();
    }
    done_ = true;
    IMGPIPE_ASSIGN_OR_RETURN(BlobInfo info, deferred ? inner_->CommitDeferred(*deferred) : inner_->Commit());
    info.size = plaintext_;
    return info;
  }

  Status Flush(std::string_view plaintext, bool last) {
    if (sealed_used_ + kSealedSegmentBytes > sealed_capacity_) {
      IMGPIPE_TRY(WriteOut());
      // The first segment gets a buffer of its own size; a second one means a larger object: gather a batch.
      const size_t segments = sealed_capacity_ == 0 ? 1 : kWriteSegments;
      if (sealed_capacity_ < segments * kSealedSegmentBytes) {
        sealed_capacity_ = segments * kSealedSegmentBytes;
        sealed_ = std::make_unique_for_overwrite<char[]>(sealed_capacity_);
      }
    }
    IMGPIPE_TRY(cipher_->SealTo(index_, last, plaintext, sealed_.get() + sealed_used_));
    sealed_used_ += plaintext.size() + kTagBytes;
    ++index_;
    plaintext_ += plaintext.size();
    if (plaintext.data() == plain_.data()) plain_.clear();
    return Ok();
  }

  Status WriteOut() {
    if (sealed_used_ == 0) return Ok();
    const size_t n = std::exchange(sealed_used_, 0);
    return inner_->Write(std::string_view(sealed_.get(), n));
  }

  std::unique_ptr<BlobWriter> inner_;
  std::unique_ptr<SegmentCipher> cipher_;
  std::string plain_;
  std::unique_ptr<char[]> sealed_;  // ciphertext only: never needs wiping
  size_t sealed_capacity_ = 0;
  size_t sealed_used_ = 0;
  uint64_t index_ = 0;
  uint64_t plaintext_ = 0;
  bool done_ = false;
};

// ---------------------------------------------------------------------------------------------------------------------

//! Decrypts segments [first, stop] of an object from an inner reader positioned at segment `first`.
//! Segments are opened straight into the caller's buffer whenever they fit whole, so the plaintext is never copied.
//! The ciphertext of a local file is decrypted where it lies in the page cache, through a mapping (a read() would copy
//! it first, which costs about a fifth of what the decryption does), when the read covers kMapMinSegments or more;
//! otherwise, and from other stores, it is read into a buffer of up to kBatchSegments segments, and each segment is
//! opened as soon as its last byte is in: an inner read takes what has arrived (a network store's body comes in
//! pieces), so a segment is decrypted while the next ones are still on their way, not after the whole batch.
class EncryptedBlobStore::Reader final : public BlobReader {
 public:
  struct Plan {
    uint64_t first = 0;        //!< first segment to read
    uint64_t stop = 0;         //!< last segment to read (last_index when `to_end`)
    uint64_t last_index = 0;   //!< the object's last segment (n - 1)
    uint64_t stored = 0;       //!< the stored object's size
    uint64_t skip = 0;         //!< plaintext bytes to drop from the first segment
    uint64_t length = 0;       //!< plaintext bytes to return
    //! Open every segment through the last even when the bytes wanted end earlier (or are none), so a whole read
    //! also proves the object's end: an object cut to look empty or shorter fails instead of reading short.
    bool to_end = false;
  };
  //! What the first inner read of a whole object holds: the header and, unless the object is mapped, whatever part
  //! of the first batch of segments came with it.
  struct Prefilled {
    std::unique_ptr<char[]> bytes;  //!< room for the header and the first batch of sealed segments (FirstReadBytes)
    size_t capacity = 0;
    size_t size = 0;                //!< bytes read into it, the header's included
  };
  //! Room for the first inner read of a whole read of an object of `stored` bytes from `inner`: the header and the
  //! first batch together when the segments will be read (a system call or a network read less per object), only
  //! the header when the object will be mapped.
  static size_t FirstReadBytes(const BlobReader& inner, uint64_t stored) {
    const uint64_t batch = kHeaderBytes + kBatchSegments * kSealedSegmentBytes;
    const uint64_t segments =
        stored > kHeaderBytes ? (stored - kHeaderBytes + kSealedSegmentBytes - 1) / kSealedSegmentBytes : 0;
    return Maps(inner, segments) ? kHeaderBytes : static_cast<size_t>(std::min(stored, batch));
  }

  //! Reads the sealed segments from `inner`, positioned at segment plan.first (or, with `first_read`, just past the
  //! segments it holds); when `inner` reads a local file, from a mapping of that file instead.
  Reader(std::unique_ptr<BlobReader> inner, std::unique_ptr<SegmentCipher> cipher, Plan plan, BlobInfo info,
         std::string container, std::string key, Prefilled first_read)
      : inner_(std::move(inner)), cipher_(std::move(cipher)), plan_(plan), next_(plan.first),
        remaining_(plan.length), info_(std::move(info)), container_(std::move(container)), key_(std::move(key)),
        mapped_(Maps(*inner_, plan.stop - plan.first + 1)) {
    if (mapped_) return;
    const uint64_t segments = plan_.stop - plan_.first + 1;
    const uint64_t all = (segments - 1) * kSealedSegmentBytes + SealedSize(plan_.stop);
    unread_ = all;
    if (first_read.capacity > kHeaderBytes) {
      // Its segments are used from where they lie, after the header; later reads go to its start.
      sealed_ = std::move(first_read.bytes);
      sealed_capacity_ = first_read.capacity;
      sealed_pos_ = kHeaderBytes;
      sealed_len_ = first_read.size;
      unread_ -= first_read.size - kHeaderBytes;
      return;
    }
    // No batch is larger than kBatchSegments full segments, nor than all the segments to read: a read of a small
    // object or range holds a buffer of its size, not of 64 KiB. Not zero-filled: every byte is read from the store
    // before it is used.
    const uint64_t batch = std::min(segments, kBatchSegments) * kSealedSegmentBytes;
    sealed_capacity_ = static_cast<size_t>(std::min(all, batch));
    sealed_.reset(new char[sealed_capacity_]);
  }

  Result<size_t> Read(std::span<char> out) override {
    if (failed_) return *failed_;
    size_t filled = 0;
    while (filled < out.size()) {
      if (pos_ < len_ && remaining_ == 0) pos_ = len_;  // a segment opened only to prove the object's end
      if (pos_ < len_) {
        size_t n = static_cast<size_t>(std::min<uint64_t>({out.size() - filled, len_ - pos_, remaining_}));
        std::copy_n(plain_.data() + pos_, n, out.data() + filled);
        pos_ += n;
        remaining_ -= n;
        filled += n;
        continue;
      }
      if (remaining_ == 0 && (!plan_.to_end || next_ > plan_.last_index)) break;
      if (Status s = OpenNext(out.subspan(filled), &filled); !s.ok()) {
        failed_ = s.error();
        return s.error();
      }
    }
    return filled;
  }

  const BlobInfo& Info() const override { return info_; }

 private:
  // 4 segments (256 KiB of plaintext) per inner read: the HTTP server asks for 256 KiB at a time.
  static constexpr uint64_t kBatchSegments = 4;
  // A local file is mapped 64 segments (4 MiB) at a time: one mapping covers a typical original, and a reader of a
  // large object holds no more than this of it in its address space (the pages are the page cache's, not copies).
  static constexpr uint64_t kMapSegments = 64;
  // Setting up and tearing down a mapping costs about 6 microseconds, what copying some 100 KB costs: reads of fewer
  // segments (thumbnails, image headers) copy.
  static constexpr uint64_t kMapMinSegments = 4;

  //! Whether a read of `segments` segments through `inner` maps them: the one place that decides it.
  static bool Maps(const BlobReader& inner, uint64_t segments) {
    return inner.LocalFd() >= 0 && segments >= kMapMinSegments;
  }

  uint64_t SealedSize(uint64_t index) const {
    return index == plan_.last_index ? plan_.stored - kHeaderBytes - plan_.last_index * kSealedSegmentBytes
                                     : kSealedSegmentBytes;
  }

  //! Reads until the `size` sealed bytes of segment next_ are in the buffer at sealed_pos_. Each inner read asks for
  //! as much as the buffer has room for (never past plan_.stop) and takes what it gets.
  Status Refill(size_t size) {
    while (sealed_len_ - sealed_pos_ < size) {
      if (sealed_pos_ + size > sealed_capacity_) {
        // Segments lie kSealedSegmentBytes apart from the buffer's start, or from the header's end in the first
        // read's buffer, so a segment can reach past the end only in that buffer once it is reused from its start,
        // and then only by a header's length: what of it was read moves to the start.
        std::memmove(sealed_.get(), sealed_.get() + sealed_pos_, sealed_len_ - sealed_pos_);
        sealed_len_ -= sealed_pos_;
        sealed_pos_ = 0;
      }
      const size_t room = static_cast<size_t>(std::min<uint64_t>(sealed_capacity_ - sealed_len_, unread_));
      if (room == 0) return Truncated(container_, key_, next_);
      IMGPIPE_ASSIGN_OR_RETURN(size_t n, inner_->Read(std::span<char>(sealed_.get() + sealed_len_, room)));
      if (n == 0) return Truncated(container_, key_, next_);
      sealed_len_ += n;
      unread_ -= n;
    }
    return Ok();
  }

  //! Maps segments next_ .. up to kMapSegments of them, through plan_.stop, of the local file behind inner_.
  Status MapWindow() {
    window_.reset();
    window_first_ = next_;
    window_stop_ = std::min(plan_.stop, next_ + kMapSegments - 1);
    const uint64_t begin = kHeaderBytes + window_first_ * kSealedSegmentBytes;
    const uint64_t end = std::min(plan_.stored, kHeaderBytes + (window_stop_ + 1) * kSealedSegmentBytes);
    IMGPIPE_ASSIGN_OR_RETURN(MappedFile mapped, MappedFile::Map(inner_->LocalFd(), begin,
                                                                static_cast<size_t>(end - begin),
                                                                Where(container_, key_)));
    window_ = std::move(mapped);
    return Ok();
  }

  //! Opens segment next_: into `out` when its plaintext fits there whole and is wanted whole, else into plain_.
  Status OpenNext(std::span<char> out, size_t* filled) {
    const bool last = next_ == plan_.last_index;
    const size_t size = static_cast<size_t>(SealedSize(next_));
    const char* sealed = nullptr;
    if (mapped_) {
      if (!window_ || next_ > window_stop_) IMGPIPE_TRY(MapWindow());
      sealed = window_->data() + (next_ - window_first_) * kSealedSegmentBytes;
    } else {
      // All read segments opened: the next ones go to the buffer's start.
      if (sealed_pos_ == sealed_len_) sealed_pos_ = sealed_len_ = 0;
      IMGPIPE_TRY(Refill(size));
      sealed = sealed_.get() + sealed_pos_;
      sealed_pos_ += size;
    }
    const size_t text = size - kTagBytes;
    const size_t skip = next_ == plan_.first ? static_cast<size_t>(std::min<uint64_t>(plan_.skip, text)) : 0;
    if (skip == 0 && text <= out.size() && text <= remaining_) {
      IMGPIPE_TRY(OpenSegment(last, sealed, size, out.data()));
      *filled += text;
      remaining_ -= text;
    } else {
      if (plain_.empty()) plain_.resize(kSegmentBytes);
      IMGPIPE_TRY(OpenSegment(last, sealed, size, plain_.data()));
      pos_ = skip;
      len_ = text;
    }
    ++next_;
    return Ok();
  }

  //! cipher_->OpenTo for segment next_; from a mapping, under its guard against the file being cut short meanwhile.
  Status OpenSegment(bool last, const char* sealed, size_t size, char* out) {
    if (!mapped_) {
      auto opened = cipher_->OpenTo(next_, last, sealed, size, out);
      if (!opened.ok()) return opened.error();
      return Ok();
    }
    struct Call {
      SegmentCipher* cipher;
      uint64_t index;
      bool last;
      const char* sealed;
      size_t size;
      char* out;
      Result<size_t>* opened;
    };
    Result<size_t> opened = size_t{0};
    Call call{cipher_.get(), next_, last, sealed, size, out, &opened};
    // Only the AES code touches the mapping, and it allocates nothing: abandoning it midway leaks nothing.
    const bool completed = window_->Guarded(
        [](void* arg) {
          auto* c = static_cast<Call*>(arg);
          *c->opened = c->cipher->OpenTo(c->index, c->last, c->sealed, c->size, c->out);
        },
        &call);
    if (!completed) {
      // Whatever was decrypted before the fault is unauthenticated.
      OPENSSL_cleanse(out, size - kTagBytes);
      return MakeError(ErrorKind::kIntegrity,
                       Where(container_, key_) + ": segment " + std::to_string(next_) +
                           " was cut short while it was being read (the stored file was truncated from outside "
                           "imgpipe)",
                       "integrity_error");
    }
    if (!opened.ok()) return opened.error();
    return Ok();
  }

  std::unique_ptr<BlobReader> inner_;
  std::unique_ptr<SegmentCipher> cipher_;
  Plan plan_;
  uint64_t next_;
  uint64_t remaining_;
  BlobInfo info_;
  std::string container_;
  std::string key_;
  std::unique_ptr<char[]> sealed_;  // segments read ahead, sealed
  size_t sealed_capacity_ = 0;
  size_t sealed_pos_ = 0;           // where segment next_ starts
  size_t sealed_len_ = 0;           // bytes read into sealed_
  uint64_t unread_ = 0;             // sealed bytes of segments through plan_.stop not read from inner_ yet
  std::vector<char> plain_;   // one opened segment that did not go straight to the caller
  size_t pos_ = 0;
  size_t len_ = 0;
  std::optional<Error> failed_;
  bool mapped_;                       // inner_ reads a local file, which is mapped instead of read
  std::optional<MappedFile> window_;  // when mapped_: segments window_first_ .. window_stop_, sealed
  uint64_t window_first_ = 0;
  uint64_t window_stop_ = 0;
};

// ---------------------------------------------------------------------------------------------------------------------

EncryptedBlobStore::EncryptedBlobStore(BlobStore& inner, KeyProvider& provider, const Clock& clock, Options options)
    : inner_(inner), provider_(provider), cache_(clock, options.key_cache_age, options.key_cache_entries) {}

Result<std::unique_ptr<BlobWriter>> EncryptedBlobStore::OpenWrite(std::string_view container, std::string_view key) {
  IMGPIPE_TRY(ValidateBlobKey(key));
  DataKey data_key = DataKey::Random();
  // The key is wrapped before the inner store sees anything: no vault, no object.
  IMGPIPE_ASSIGN_OR_RETURN(EnvelopeHeader header, NewEnvelopeHeader(provider_, data_key, container, key));
  IMGPIPE_ASSIGN_OR_RETURN(std::string header_bytes, SerializeHeader(header));
  IMGPIPE_ASSIGN_OR_RETURN(auto cipher, SegmentCipher::Create(data_key, header, container, key));
  IMGPIPE_ASSIGN_OR_RETURN(auto inner, inner_.OpenWrite(container, key));
  if (Status s = inner->Write(header_bytes); !s.ok()) {
    inner->Abort();
    return s.error();
  }
  cache_.Put(DataKeyCache::CacheKey(header.wrapped, WrapAad(header, container, key)), data_key);
  return std::unique_ptr<BlobWriter>(new Writer(std::move(inner), std::move(cipher)));
}

Result<DataKey> EncryptedBlobStore::OpenDataKey(const EnvelopeHeader& header, std::string_view container,
                                                std::string_view key) {
  std::string aad = WrapAad(header, container, key);
  std::string cache_key = DataKeyCache::CacheKey(header.wrapped, aad);
  if (auto cached = cache_.Get(cache_key)) return *cached;
  auto opened = provider_.Unwrap(header.wrapped, aad);
  if (!opened.ok()) {
    Error e = opened.error();
    e.message = Where(container, key) + ": cannot open its data key: " + e.message;
    // A key the vault does not have (another keyring, a retired or forged version) is this object's problem, not a
    // missing object: never a 404.
    if (e.kind == ErrorKind::kNotFound) {
      e.kind = ErrorKind::kIntegrity;
      e.code = "integrity_error";
    }
    return e;
  }
  cache_.Put(cache_key, *opened);
  return opened;
}

Result<std::pair<EnvelopeHeader, BlobInfo>> EncryptedBlobStore::ReadHeader(std::string_view container,
                                                                           std::string_view key) {
  IMGPIPE_ASSIGN_OR_RETURN(auto reader, inner_.OpenRead(container, key, ByteRange{0, kHeaderBytes}));
  std::string bytes(kHeaderBytes, '\0');
  IMGPIPE_ASSIGN_OR_RETURN(size_t got, ReadFully(*reader, bytes.data(), bytes.size()));
  bytes.resize(got);
  auto header = ParseHeader(bytes);
  if (!header.ok()) return About(container, key, header.error());
  return std::make_pair(std::move(header).value(), reader->Info());
}

Result<std::unique_ptr<BlobReader>> EncryptedBlobStore::OpenRead(std::string_view container, std::string_view key,
                                                                 std::optional<ByteRange> range) {
  if (range) return OpenRange(container, key, *range, /*whole=*/false);
  return OpenRange(container, key, ByteRange{0, UINT64_MAX}, /*whole=*/true);
}

Result<std::unique_ptr<BlobReader>> EncryptedBlobStore::OpenRange(std::string_view container, std::string_view key,
                                                                  ByteRange range, bool whole) {
  // A whole read streams header and segments from one inner reader. A ranged read reads the header first, then the
  // segments covering the range; if the object is replaced in between (the etags differ), it starts over once.
  for (int attempt = 0;; ++attempt) {
    std::unique_ptr<BlobReader> inner;
    EnvelopeHeader header;
    BlobInfo stored;
    Reader::Prefilled first_read;
    if (whole) {
      IMGPIPE_ASSIGN_OR_RETURN(inner, inner_.OpenRead(container, key));
      stored = inner->Info();
      first_read.capacity = Reader::FirstReadBytes(*inner, stored.size);
      // Not zero-filled: only the bytes read are used.
      first_read.bytes.reset(new char[first_read.capacity]);
      // The header, and whatever has come in with it: the reader opens those segments first (an object shorter
      // than its size said fails there, naming its first missing segment).
      const size_t need = std::min(first_read.capacity, kHeaderBytes);
      IMGPIPE_ASSIGN_OR_RETURN(first_read.size,
                               ReadAtLeast(*inner, first_read.bytes.get(), need, first_read.capacity));
      auto parsed = ParseHeader(std::string_view(first_read.bytes.get(), std::min(first_read.size, kHeaderBytes)));
      if (!parsed.ok()) return About(container, key, parsed.error());
      header = std::move(parsed).value();
    } else {
      IMGPIPE_ASSIGN_OR_RETURN(auto head, ReadHeader(container, key));
      header = std::move(head.first);
      stored = std::move(head.second);
    }
    auto plain_size = PlaintextSize(stored.size);
    if (!plain_size.ok()) return About(container, key, plain_size.error());
    const uint64_t size = *plain_size;
    if (range.offset >= size && !(size == 0 && range.offset == 0)) {
      return MakeError(ErrorKind::kRangeNotSatisfiable, "range starts at byte " + std::to_string(range.offset) +
                                                            " but " + Where(container, key) + " is " +
                                                            std::to_string(size) + " bytes");
    }
    const uint64_t length = std::min(range.length, size - range.offset);
    Reader::Plan plan;
    plan.last_index = SegmentCount(size) - 1;
    plan.first = range.offset / kSegmentBytes;
    plan.stored = stored.size;
    plan.skip = range.offset - plan.first * kSegmentBytes;
    plan.length = length;
    plan.to_end = whole;
    plan.stop = plan.last_index;
    if (!whole) {
      const uint64_t stop = length == 0 ? plan.first : (range.offset + length - 1) / kSegmentBytes;
      plan.stop = stop;
      const uint64_t begin = kHeaderBytes + plan.first * kSealedSegmentBytes;
      const uint64_t end = std::min(stored.size, kHeaderBytes + (stop + 1) * kSealedSegmentBytes);
      IMGPIPE_ASSIGN_OR_RETURN(inner, inner_.OpenRead(container, key, ByteRange{begin, end - begin}));
      if (inner->Info().etag != stored.etag || inner->Info().size != stored.size) {
        if (attempt == 0) continue;
        return MakeError(ErrorKind::kRetry, Where(container, key) + " changed twice while it was being opened");
      }
    }
    IMGPIPE_ASSIGN_OR_RETURN(DataKey data_key, OpenDataKey(header, container, key));
    IMGPIPE_ASSIGN_OR_RETURN(auto cipher, SegmentCipher::Create(data_key, header, container, key));
    BlobInfo info = stored;
    info.size = size;
    return std::unique_ptr<BlobReader>(new Reader(std::move(inner), std::move(cipher), plan, std::move(info),
                                                  std::string(container), std::string(key), std::move(first_read)));
  }
}

Result<BlobInfo> EncryptedBlobStore::Stat(std::string_view container, std::string_view key) {
  IMGPIPE_ASSIGN_OR_RETURN(BlobInfo info, inner_.Stat(container, key));
  auto size = PlaintextSize(info.size);
  if (!size.ok()) return About(container, key, size.error());
  info.size = *size;
  return info;
}

Result<BlobInfo> EncryptedBlobStore::PutFile(std::string_view container, std::string_view key,
                                             const std::string& path) {
  IMGPIPE_ASSIGN_OR_RETURN(BlobInfo info, BlobStore::PutFile(container, key, path));
  ::unlink(path.c_str());
  return info;
}

Result<BlobInfo> EncryptedBlobStore::PutFileDeferred(std::string_view container, std::string_view key,
                                                     const std::string& path, DeferredSync& deferred) {
  IMGPIPE_ASSIGN_OR_RETURN(BlobInfo info, BlobStore::PutFileDeferred(container, key, path, deferred));
  ::unlink(path.c_str());
  return info;
}

Status EncryptedBlobStore::Delete(std::string_view container, std::string_view key) {
  return inner_.Delete(container, key);
}

Result<ListPage> EncryptedBlobStore::List(std::string_view container, std::string_view prefix,
                                          std::string_view continuation, size_t max_items) {
  IMGPIPE_ASSIGN_OR_RETURN(ListPage page, inner_.List(container, prefix, continuation, max_items));
  for (BlobInfo& item : page.items) {
    if (auto size = PlaintextSize(item.size); size.ok()) item.size = *size;
  }
  return page;
}

Status EncryptedBlobStore::Ping() {
  IMGPIPE_TRY(inner_.Ping());
  if (Status s = provider_.Ping(); !s.ok()) {
    Error e = s.error();
    e.message = "key provider \"" + std::string(provider_.Name()) + "\" unavailable, writes are refused: " + e.message;
    return e;
  }
  return Ok();
}

}  // namespace imgpipe
