#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "crypto/encrypted_blob_store.hpp"

namespace imgpipe {

//! What a pass over the stored objects found and did.
struct KeyScanReport {
  uint64_t objects = 0;
  std::map<uint32_t, uint64_t> by_version;  //!< objects per KEK version (ScanKeyUsage)
  uint64_t plaintext = 0;                   //!< objects without the envelope (written before encryption was on)
  uint64_t unreadable = 0;                  //!< damaged headers, or keys the provider cannot open
  uint64_t rewrapped = 0;                   //!< headers rewritten with the current version
  uint64_t encrypted = 0;                   //!< plaintext objects encrypted
  uint64_t changed_meanwhile = 0;           //!< replaced by a writer during the pass: left as the writer made them
  std::vector<std::string> examples;        //!< a few "container/key: problem" lines for the operator
};

//! Reads the header of every object in `containers` (no content) and counts them per KEK version.
Result<KeyScanReport> ScanKeyUsage(EncryptedBlobStore& store, const std::vector<std::string>& containers);

//! Rewraps every object's data key with the provider's current KEK version, without re-encrypting the content, and
//! encrypts objects that have no envelope yet. Each object is rewritten whole through the inner store (header +
//! the same sealed segments), which every backend publishes atomically on Commit; before committing, the object's
//! etag is checked again, and an object replaced meanwhile is left alone (its writer used the current version).
//! Objects already on the current version cost one 160-byte read, so the pass is resumable by running it again.
//! Safe while serving. `progress` is called every 1000 objects.
Result<KeyScanReport> RewrapAll(EncryptedBlobStore& store, const std::vector<std::string>& containers,
                                const std::function<void(const KeyScanReport&)>& progress = {});

enum class RewrapOutcome { kRewrapped, kEncrypted, kAlreadyCurrent, kChangedMeanwhile };
//! Rewraps (or encrypts) one object; see RewrapAll.
Result<RewrapOutcome> RewrapObject(EncryptedBlobStore& store, std::string_view container, std::string_view key,
                                   uint32_t current_version);

}  // namespace imgpipe
