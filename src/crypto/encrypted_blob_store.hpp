#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "crypto/data_key_cache.hpp"
#include "crypto/envelope_format.hpp"
#include "crypto/key_provider.hpp"
#include "storage/blob_store.hpp"

namespace imgpipe {

//! A BlobStore that encrypts every object it writes and decrypts every object it reads, over any other BlobStore
//! (local, Azure, S3), in the envelope format of docs/ENCRYPTION.md: a fresh 256-bit data key per object, wrapped
//! by the key provider; 64 KiB segments sealed with AES-256-GCM.
//!
//! Guarantees:
//! - Fail closed: OpenWrite asks the key provider to wrap a fresh data key before anything reaches the inner store;
//!   if the provider is unavailable it fails (kUnavailable) and nothing is written.
//! - Readers return only authenticated bytes. A segment that fails its tag, a truncated or padded object, a header
//!   from another object, an object that is not encrypted (no envelope magic): kIntegrity, before any byte of the
//!   bad segment is returned. (Bytes of earlier, authentic segments may already have been returned.)
//! - Ranged reads fetch and open only the segments covering the range (plus the header).
//! - Sizes in BlobInfo (Stat, List, readers, Commit) are plaintext sizes, computed from the stored size; etags and
//!   times are the inner store's.
//! - LocalPath is always nullopt: the file on disk is ciphertext. Callers spool through OpenRead.
//!
//! Relies on the inner store's BlobReader::Info().size being the whole object's size, also for a ranged read.
//! Thread-safe if the inner store and the provider are. Both must outlive this store.
class EncryptedBlobStore final : public BlobStore {
 public:
  struct Options {
    std::chrono::milliseconds key_cache_age{std::chrono::minutes(5)};  //!< 0 disables the data key cache
    size_t key_cache_entries = 4096;
  };
  EncryptedBlobStore(BlobStore& inner, KeyProvider& provider, const Clock& clock, Options options);
  EncryptedBlobStore(BlobStore& inner, KeyProvider& provider, const Clock& clock)
      : EncryptedBlobStore(inner, provider, clock, Options{}) {}

  Result<std::unique_ptr<BlobWriter>> OpenWrite(std::string_view container, std::string_view key) override;
  Result<std::unique_ptr<BlobReader>> OpenRead(std::string_view container, std::string_view key,
                                               std::optional<ByteRange> range = std::nullopt) override;
  Result<BlobInfo> Stat(std::string_view container, std::string_view key) override;
  Status Delete(std::string_view container, std::string_view key) override;
  //! Objects whose stored size no encrypted object can have (legacy plaintext) are listed with their stored size.
  Result<ListPage> List(std::string_view container, std::string_view prefix, std::string_view continuation = {},
                        size_t max_items = 1000) override;
  //! Encrypts the file into the store through OpenWrite, then removes the file (it is plaintext): on success the
  //! file is consumed, as with the local backend's rename; on failure it is left to the caller.
  Result<BlobInfo> PutFile(std::string_view container, std::string_view key, const std::string& path) override;
  //! PutFile() whose object name becomes durable with `deferred` (the inner store's CommitDeferred).
  Result<BlobInfo> PutFileDeferred(std::string_view container, std::string_view key, const std::string& path,
                                   DeferredSync& deferred) override;
  std::optional<std::string> LocalPath(std::string_view, std::string_view) override { return std::nullopt; }
  //! The inner store's Ping, then the key provider's: not ready when either is down.
  Status Ping() override;
  std::string_view Name() const override { return inner_.Name(); }

  //! The data key of the object whose header is `header`, from the cache or the provider.
  Result<DataKey> OpenDataKey(const EnvelopeHeader& header, std::string_view container, std::string_view key);
  //! Reads and parses the header of an object in the inner store; also returns the object's stored info.
  Result<std::pair<EnvelopeHeader, BlobInfo>> ReadHeader(std::string_view container, std::string_view key);

  BlobStore& inner() { return inner_; }
  KeyProvider& provider() { return provider_; }
  DataKeyCache& key_cache() { return cache_; }

 private:
  class Writer;
  class Reader;

  Result<std::unique_ptr<BlobReader>> OpenRange(std::string_view container, std::string_view key, ByteRange range,
                                                bool whole);

  BlobStore& inner_;
  KeyProvider& provider_;
  DataKeyCache cache_;
};

//! A header whose data key is wrapped afresh by `provider` (its current KEK version), for the object at
//! container/key, with a new random nonce prefix.
Result<EnvelopeHeader> NewEnvelopeHeader(KeyProvider& provider, const DataKey& key, std::string_view container,
                                         std::string_view object_key);

}  // namespace imgpipe
