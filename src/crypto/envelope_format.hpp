#pragma once

#include <openssl/evp.h>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/result.hpp"

namespace imgpipe {

// The envelope format of an encrypted object (docs/ENCRYPTION.md is the specification; change both together):
//
//   header (kHeaderBytes) || segment 0 || segment 1 || ... || segment n-1
//
// Every segment but the last holds kSegmentBytes of plaintext; the last holds 0..kSegmentBytes (an empty object is
// one empty last segment). Each segment is sealed with AES-256-GCM under the object's data key: ciphertext || 16-byte
// tag. Nonce = nonce prefix (7, random per object) || segment index (4, big-endian) || last flag (1). The additional
// data binds the header's fixed fields, the object's container and key, the index and the last flag, so a segment
// moved to another place, another object, or cut short as a false end fails its tag.

inline constexpr size_t kHeaderBytes = 160;
inline constexpr uint8_t kFormatVersion = 1;
inline constexpr uint8_t kSegmentLog2 = 16;
inline constexpr uint64_t kSegmentBytes = uint64_t{1} << kSegmentLog2;  //!< plaintext bytes per full segment
inline constexpr uint64_t kTagBytes = 16;
inline constexpr uint64_t kSealedSegmentBytes = kSegmentBytes + kTagBytes;
inline constexpr size_t kNoncePrefixBytes = 7;
inline constexpr size_t kDataKeyBytes = 32;
inline constexpr size_t kMaxKeyIdBytes = 32;
inline constexpr size_t kMaxWrappedKeyBytes = 96;
//! The 8 magic bytes every encrypted object starts with. The first is not ASCII, so no text or image format
//! (and no legacy plaintext object of ours: JPEG, PNG, WebP...) starts this way.
inline constexpr std::string_view kEnvelopeMagic{"\x89IPENC\r\n", 8};

//! How the data key is wrapped. Only AES-256-GCM (iv 12 || ciphertext 32 || tag 16) so far.
enum class WrapAlgorithm : uint8_t { kAes256Gcm = 1 };

//! A 256-bit key that wipes itself when destroyed.
class DataKey {
 public:
  DataKey() = default;
  DataKey(const DataKey&) = default;
  DataKey& operator=(const DataKey&) = default;
  ~DataKey();
  static DataKey Random();
  //! nullopt unless `bytes` is exactly kDataKeyBytes long.
  static std::optional<DataKey> FromBytes(std::string_view bytes);
  unsigned char* data() { return bytes_.data(); }
  const unsigned char* data() const { return bytes_.data(); }
  static constexpr size_t size() { return kDataKeyBytes; }

 private:
  std::array<unsigned char, kDataKeyBytes> bytes_{};
};

//! The data key as a key provider wrapped it, and which key-encryption key (id and version) did.
struct WrappedKey {
  std::string key_id;         //!< the provider's name for its KEK family, [A-Za-z0-9._-], 1..kMaxKeyIdBytes
  uint32_t version = 0;       //!< KEK version, >= 1
  WrapAlgorithm algorithm = WrapAlgorithm::kAes256Gcm;
  std::string bytes;          //!< 1..kMaxWrappedKeyBytes
};

struct EnvelopeHeader {
  std::array<unsigned char, kNoncePrefixBytes> nonce_prefix{};
  WrappedKey wrapped;
};

//! The header's kHeaderBytes bytes. kInvalidArgument if a field does not fit.
Result<std::string> SerializeHeader(const EnvelopeHeader& header);
//! Parses the first kHeaderBytes of an object. kIntegrity naming the problem (no magic: not an encrypted object;
//! an unknown version; a field out of range; non-zero reserved bytes).
Result<EnvelopeHeader> ParseHeader(std::string_view bytes);
//! True if `bytes` starts with the envelope magic (a quick test for legacy plaintext objects).
bool HasEnvelopeMagic(std::string_view bytes);

//! The additional data the data key's wrapping is bound to: the object's place and its nonce prefix. Providers pass
//! it to their AEAD; a header copied onto another object then fails to unwrap.
std::string WrapAad(const EnvelopeHeader& header, std::string_view container, std::string_view key);

//! Stored size of an object of `plaintext` bytes.
uint64_t CiphertextSize(uint64_t plaintext);
//! The plaintext size of a stored object of `ciphertext` bytes; kIntegrity if no plaintext size gives it (a
//! truncated or padded object).
Result<uint64_t> PlaintextSize(uint64_t ciphertext);
//! Number of segments of an object of `plaintext` bytes (at least 1).
uint64_t SegmentCount(uint64_t plaintext);

//! One-shot AES-256-GCM with a random 12-byte IV: returns iv || ciphertext || tag. For wrapping keys.
Result<std::string> AesGcmSeal(const unsigned char* key32, std::string_view aad, std::string_view plaintext);
//! Opens what AesGcmSeal returned; kIntegrity if it does not authenticate under `key32` and `aad`.
Result<std::string> AesGcmOpen(const unsigned char* key32, std::string_view aad, std::string_view sealed);

//! Seals and opens the segments of one object. Holds the data key in an OpenSSL context; not thread-safe.
class SegmentCipher {
 public:
  //! Which AES-256-GCM code does the work (the bytes are the same: the standard algorithm either way).
  enum class Engine {
    kBest,     //!< Intel's multi-buffer library where the CPU has VAES and VPCLMULQDQ (AVX-512), else OpenSSL
    kOpenSsl,  //!< always OpenSSL (tests check that both engines open each other's segments)
  };
  //! `container` and `key` are the object's place, bound into every segment.
  static Result<std::unique_ptr<SegmentCipher>> Create(const DataKey& key, const EnvelopeHeader& header,
                                                       std::string_view container, std::string_view object_key,
                                                       Engine engine = Engine::kBest);
  //! True if Engine::kBest is not OpenSSL on this machine (the library is built in and the CPU has what it needs).
  static bool HasFastEngine();
  ~SegmentCipher();

  //! Seals `plaintext` (at most kSegmentBytes) as segment `index`; appends ciphertext || tag to `out`.
  Status Seal(uint64_t index, bool last, std::string_view plaintext, std::string* out);
  //! Seal() into a caller's buffer of at least plaintext.size() + kTagBytes bytes (not overlapping `plaintext`), so
  //! a writer can gather several sealed segments for one write without zero-filling or copying them first.
  Status SealTo(uint64_t index, bool last, std::string_view plaintext, char* out);
  //! Opens a sealed segment in place: `data` holds ciphertext || tag of `size` bytes; on success the first
  //! size - kTagBytes bytes are the plaintext. kIntegrity if the tag does not match.
  Result<size_t> Open(uint64_t index, bool last, char* data, size_t size) {
    return OpenTo(index, last, data, size, data);
  }
  //! Open() into another buffer: `out` receives the size - kTagBytes bytes of plaintext (it may equal `sealed`, not
  //! overlap it otherwise), so a reader decrypts straight into its caller's buffer without a copy. On failure `out`
  //! is wiped: it never holds unauthenticated bytes.
  Result<size_t> OpenTo(uint64_t index, bool last, const char* sealed, size_t size, char* out);

 private:
  SegmentCipher() = default;
  void Nonce(uint64_t index, bool last, unsigned char* nonce) const;
  void SetAadTail(uint64_t index, bool last);

  struct FastKey;  // the data key expanded for the fast engine, when it is used

  EVP_CIPHER_CTX* enc_ = nullptr;  // OpenSSL's contexts, when the fast engine is not used
  EVP_CIPHER_CTX* dec_ = nullptr;
  FastKey* fast_ = nullptr;
  std::array<unsigned char, kNoncePrefixBytes> prefix_{};
  std::string aad_;        //!< fixed part, then 5 bytes of index and flag rewritten per segment
  size_t aad_fixed_ = 0;
  std::string where_;      //!< "container/key" for messages
};

}  // namespace imgpipe
