#include "crypto/envelope_format.hpp"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>
#include <mutex>
#include <stdexcept>

#ifdef IMGPIPE_HAVE_IPSEC_MB
#include <intel-ipsec-mb.h>
#endif

namespace imgpipe {

namespace {

// Header layout (offsets in bytes); docs/ENCRYPTION.md has the same table.
constexpr size_t kOffVersion = 8;
constexpr size_t kOffSegmentLog2 = 9;
constexpr size_t kOffWrapAlgorithm = 10;
constexpr size_t kOffWrappedLength = 11;
constexpr size_t kOffKeyIdLength = 12;
constexpr size_t kOffKeyId = 16;
constexpr size_t kOffKekVersion = 48;
constexpr size_t kOffNoncePrefix = 52;
constexpr size_t kOffWrappedKey = 64;
static_assert(kOffKeyId + kMaxKeyIdBytes == kOffKekVersion);
static_assert(kOffWrappedKey + kMaxWrappedKeyBytes == kHeaderBytes);

Error Corrupt(std::string what) {
  return MakeError(ErrorKind::kIntegrity, "encrypted object header: " + std::move(what), "integrity_error");
}

void PutU16(std::string* out, size_t v) {
  out->push_back(static_cast<char>((v >> 8) & 0xff));
  out->push_back(static_cast<char>(v & 0xff));
}

void PutU32(unsigned char* p, uint32_t v) {
  p[0] = static_cast<unsigned char>(v >> 24);
  p[1] = static_cast<unsigned char>(v >> 16);
  p[2] = static_cast<unsigned char>(v >> 8);
  p[3] = static_cast<unsigned char>(v);
}

uint32_t GetU32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

bool IsKeyIdChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
         c == '-';
}

bool AllZero(std::string_view bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](char c) { return c == 0; });
}

// The object's place, length-prefixed so "a" + "bc" and "ab" + "c" differ.
void AppendPlace(std::string* out, std::string_view container, std::string_view key) {
  PutU16(out, container.size());
  out->append(container);
  PutU16(out, key.size());
  out->append(key);
}

}  // namespace

DataKey::~DataKey() { OPENSSL_cleanse(bytes_.data(), bytes_.size()); }

DataKey DataKey::Random() {
  DataKey k;
  // RAND_bytes fails only if the OS entropy source is broken; nothing safe can be done then.
  if (RAND_bytes(k.bytes_.data(), static_cast<int>(k.bytes_.size())) != 1) {
    throw std::runtime_error("RAND_bytes failed: no entropy for a data key");
  }
  return k;
}

std::optional<DataKey> DataKey::FromBytes(std::string_view bytes) {
  if (bytes.size() != kDataKeyBytes) return std::nullopt;
  DataKey k;
  std::copy(bytes.begin(), bytes.end(), k.bytes_.begin());
  return k;
}

Result<std::string> SerializeHeader(const EnvelopeHeader& header) {
  const WrappedKey& w = header.wrapped;
  if (w.key_id.empty() || w.key_id.size() > kMaxKeyIdBytes ||
      !std::all_of(w.key_id.begin(), w.key_id.end(), IsKeyIdChar)) {
    return MakeError(ErrorKind::kInvalidArgument, "key id \"" + w.key_id + "\" must be 1.." +
                                                      std::to_string(kMaxKeyIdBytes) + " of [A-Za-z0-9._-]");
  }
  if (w.bytes.empty() || w.bytes.size() > kMaxWrappedKeyBytes) {
    return MakeError(ErrorKind::kInvalidArgument,
                     "wrapped key of " + std::to_string(w.bytes.size()) + " bytes does not fit the header");
  }
  if (w.version == 0) return MakeError(ErrorKind::kInvalidArgument, "key version 0 is not a version");
  std::string out(kHeaderBytes, '\0');
  auto* p = reinterpret_cast<unsigned char*>(out.data());
  std::copy(kEnvelopeMagic.begin(), kEnvelopeMagic.end(), out.begin());
  p[kOffVersion] = kFormatVersion;
  p[kOffSegmentLog2] = kSegmentLog2;
  p[kOffWrapAlgorithm] = static_cast<unsigned char>(w.algorithm);
  p[kOffWrappedLength] = static_cast<unsigned char>(w.bytes.size());
  p[kOffKeyIdLength] = static_cast<unsigned char>(w.key_id.size());
  std::copy(w.key_id.begin(), w.key_id.end(), out.begin() + kOffKeyId);
  PutU32(p + kOffKekVersion, w.version);
  std::copy(header.nonce_prefix.begin(), header.nonce_prefix.end(), p + kOffNoncePrefix);
  std::copy(w.bytes.begin(), w.bytes.end(), out.begin() + kOffWrappedKey);
  return out;
}

bool HasEnvelopeMagic(std::string_view bytes) { return bytes.substr(0, kEnvelopeMagic.size()) == kEnvelopeMagic; }

Result<EnvelopeHeader> ParseHeader(std::string_view bytes) {
  if (!HasEnvelopeMagic(bytes)) {
    return Corrupt("no envelope magic: the object is not encrypted (stored before encryption was enabled, or "
                   "replaced from outside imgpipe); `imgpipe kek rewrap` encrypts such objects");
  }
  if (bytes.size() < kHeaderBytes) {
    return Corrupt("truncated: " + std::to_string(bytes.size()) + " of " + std::to_string(kHeaderBytes) + " bytes");
  }
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  if (p[kOffVersion] != kFormatVersion) {
    return Corrupt("format version " + std::to_string(p[kOffVersion]) + " is not one this imgpipe reads (" +
                   std::to_string(kFormatVersion) + "); upgrade imgpipe");
  }
  if (p[kOffSegmentLog2] != kSegmentLog2) {
    return Corrupt("segment size 2^" + std::to_string(p[kOffSegmentLog2]) + " is not 2^" +
                   std::to_string(kSegmentLog2));
  }
  if (p[kOffWrapAlgorithm] != static_cast<unsigned char>(WrapAlgorithm::kAes256Gcm)) {
    return Corrupt("unknown key wrap algorithm " + std::to_string(p[kOffWrapAlgorithm]));
  }
  size_t wrapped_len = p[kOffWrappedLength];
  size_t key_id_len = p[kOffKeyIdLength];
  if (wrapped_len == 0 || wrapped_len > kMaxWrappedKeyBytes) {
    return Corrupt("wrapped key length " + std::to_string(wrapped_len) + " out of range");
  }
  if (key_id_len == 0 || key_id_len > kMaxKeyIdBytes) {
    return Corrupt("key id length " + std::to_string(key_id_len) + " out of range");
  }
  // Reserved and padding bytes must be zero, so the header has one encoding and nothing can hide in it.
  if (!AllZero(bytes.substr(kOffKeyIdLength + 1, kOffKeyId - kOffKeyIdLength - 1)) ||
      !AllZero(bytes.substr(kOffKeyId + key_id_len, kMaxKeyIdBytes - key_id_len)) ||
      !AllZero(bytes.substr(kOffNoncePrefix + kNoncePrefixBytes, kOffWrappedKey - kOffNoncePrefix - kNoncePrefixBytes)) ||
      !AllZero(bytes.substr(kOffWrappedKey + wrapped_len, kMaxWrappedKeyBytes - wrapped_len))) {
    return Corrupt("reserved bytes are not zero");
  }
  EnvelopeHeader h;
  h.wrapped.key_id.assign(bytes.substr(kOffKeyId, key_id_len));
  if (!std::all_of(h.wrapped.key_id.begin(), h.wrapped.key_id.end(), IsKeyIdChar)) {
    return Corrupt("key id has characters outside [A-Za-z0-9._-]");
  }
  h.wrapped.version = GetU32(p + kOffKekVersion);
  if (h.wrapped.version == 0) return Corrupt("key version 0");
  h.wrapped.algorithm = WrapAlgorithm::kAes256Gcm;
  h.wrapped.bytes.assign(bytes.substr(kOffWrappedKey, wrapped_len));
  std::copy(p + kOffNoncePrefix, p + kOffNoncePrefix + kNoncePrefixBytes, h.nonce_prefix.begin());
  return h;
}

std::string WrapAad(const EnvelopeHeader& header, std::string_view container, std::string_view key) {
  std::string aad = "imgpipe-dek";
  aad.push_back(static_cast<char>(kFormatVersion));
  aad.append(reinterpret_cast<const char*>(header.nonce_prefix.data()), header.nonce_prefix.size());
  AppendPlace(&aad, container, key);
  return aad;
}

uint64_t SegmentCount(uint64_t plaintext) {
  return plaintext == 0 ? 1 : (plaintext + kSegmentBytes - 1) / kSegmentBytes;
}

uint64_t CiphertextSize(uint64_t plaintext) { return kHeaderBytes + plaintext + SegmentCount(plaintext) * kTagBytes; }

Result<uint64_t> PlaintextSize(uint64_t ciphertext) {
  auto bad = [&] {
    return MakeError(ErrorKind::kIntegrity,
                     "an encrypted object of " + std::to_string(ciphertext) +
                         " bytes cannot exist (truncated, padded or not encrypted)",
                     "integrity_error");
  };
  if (ciphertext < kHeaderBytes + kTagBytes) return bad();
  uint64_t body = ciphertext - kHeaderBytes;
  uint64_t full = body / kSealedSegmentBytes;
  uint64_t rest = body % kSealedSegmentBytes;
  if (rest == 0) return full * kSegmentBytes;  // full >= 1 here, since body >= kTagBytes
  // An empty last segment exists only in an empty object: after full segments it would be padding.
  if (rest < kTagBytes || (rest == kTagBytes && full > 0)) return bad();
  return full * kSegmentBytes + (rest - kTagBytes);
}

namespace {

struct CipherCtx {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  ~CipherCtx() { EVP_CIPHER_CTX_free(ctx); }
};

}  // namespace

Result<std::string> AesGcmSeal(const unsigned char* key32, std::string_view aad, std::string_view plaintext) {
  constexpr size_t kIv = 12;
  std::string out(kIv + plaintext.size() + kTagBytes, '\0');
  auto* p = reinterpret_cast<unsigned char*>(out.data());
  CipherCtx c;
  int len = 0;
  bool ok = c.ctx != nullptr && RAND_bytes(p, kIv) == 1 &&
            EVP_EncryptInit_ex(c.ctx, EVP_aes_256_gcm(), nullptr, key32, p) == 1 &&
            EVP_EncryptUpdate(c.ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(aad.data()),
                              static_cast<int>(aad.size())) == 1 &&
            EVP_EncryptUpdate(c.ctx, p + kIv, &len, reinterpret_cast<const unsigned char*>(plaintext.data()),
                              static_cast<int>(plaintext.size())) == 1 &&
            EVP_EncryptFinal_ex(c.ctx, p + kIv + len, &len) == 1 &&
            EVP_CIPHER_CTX_ctrl(c.ctx, EVP_CTRL_GCM_GET_TAG, kTagBytes, p + kIv + plaintext.size()) == 1;
  if (!ok) return MakeError(ErrorKind::kInternal, "AES-256-GCM key wrapping failed in OpenSSL");
  return out;
}

Result<std::string> AesGcmOpen(const unsigned char* key32, std::string_view aad, std::string_view sealed) {
  constexpr size_t kIv = 12;
  if (sealed.size() < kIv + kTagBytes) {
    return MakeError(ErrorKind::kIntegrity, "wrapped key is too short", "integrity_error");
  }
  const auto* p = reinterpret_cast<const unsigned char*>(sealed.data());
  size_t text = sealed.size() - kIv - kTagBytes;
  std::string out(text, '\0');
  CipherCtx c;
  int len = 0;
  bool ok = c.ctx != nullptr && EVP_DecryptInit_ex(c.ctx, EVP_aes_256_gcm(), nullptr, key32, p) == 1 &&
            EVP_DecryptUpdate(c.ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(aad.data()),
                              static_cast<int>(aad.size())) == 1 &&
            EVP_DecryptUpdate(c.ctx, reinterpret_cast<unsigned char*>(out.data()), &len, p + kIv,
                              static_cast<int>(text)) == 1 &&
            EVP_CIPHER_CTX_ctrl(c.ctx, EVP_CTRL_GCM_SET_TAG, kTagBytes,
                                const_cast<unsigned char*>(p + kIv + text)) == 1 &&
            EVP_DecryptFinal_ex(c.ctx, reinterpret_cast<unsigned char*>(out.data()) + len, &len) == 1;
  if (!ok) {
    OPENSSL_cleanse(out.data(), out.size());
    return MakeError(ErrorKind::kIntegrity, "wrapped key does not open under its key-encryption key", "integrity_error");
  }
  return out;
}

#ifdef IMGPIPE_HAVE_IPSEC_MB

namespace {

// Intel's multi-buffer crypto library has AES-256-GCM with VAES and VPCLMULQDQ on AVX-512 CPUs; Debian 12's OpenSSL
// 3.0 has no such code path. On the benchmark machine it seals and opens 64 KiB segments at about 16 GB/s per core
// against OpenSSL's 6, which is most of what reading a large encrypted original costs. The manager is set up once
// and only its function table is used afterwards (the GCM calls keep their state in the caller's key and context
// structs), so every thread shares it. Null where the CPU lacks those instructions: OpenSSL does the work then.
IMB_MGR* FastManager() {
  static IMB_MGR* manager = [] {
    IMB_MGR* m = alloc_mb_mgr(0);
    if (m == nullptr) return m;
    IMB_ARCH arch = IMB_ARCH_NONE;
    init_mb_mgr_auto(m, &arch);
    const uint64_t needed = IMB_FEATURE_VAES | IMB_FEATURE_VPCLMULQDQ;
    if (imb_get_errno(m) != 0 || arch != IMB_ARCH_AVX512 || (m->features & needed) != needed) {
      free_mb_mgr(m);
      return static_cast<IMB_MGR*>(nullptr);
    }
    return m;
  }();
  return manager;
}

}  // namespace

struct SegmentCipher::FastKey {
  IMB_MGR* manager = nullptr;
  // The header aligns these only when LINUX is defined; the library's AVX-512 code wants 64 bytes.
  alignas(64) gcm_key_data key{};
  ~FastKey() { OPENSSL_cleanse(&key, sizeof key); }
};

bool SegmentCipher::HasFastEngine() { return FastManager() != nullptr; }

#else

struct SegmentCipher::FastKey {};

bool SegmentCipher::HasFastEngine() { return false; }

#endif

Result<std::unique_ptr<SegmentCipher>> SegmentCipher::Create(const DataKey& key, const EnvelopeHeader& header,
                                                             std::string_view container, std::string_view object_key,
                                                             Engine engine) {
  std::unique_ptr<SegmentCipher> c(new SegmentCipher());
  c->where_ = std::string(container) + "/" + std::string(object_key);
  c->prefix_ = header.nonce_prefix;
#ifdef IMGPIPE_HAVE_IPSEC_MB
  if (IMB_MGR* manager = FastManager(); engine == Engine::kBest && manager != nullptr) {
    c->fast_ = new FastKey();
    c->fast_->manager = manager;
    IMB_AES256_GCM_PRE(manager, key.data(), &c->fast_->key);
  }
#endif
  if (c->fast_ == nullptr) {
    c->enc_ = EVP_CIPHER_CTX_new();
    c->dec_ = EVP_CIPHER_CTX_new();
    if (c->enc_ == nullptr || c->dec_ == nullptr ||
        EVP_EncryptInit_ex(c->enc_, EVP_aes_256_gcm(), nullptr, key.data(), nullptr) != 1 ||
        EVP_DecryptInit_ex(c->dec_, EVP_aes_256_gcm(), nullptr, key.data(), nullptr) != 1) {
      return MakeError(ErrorKind::kInternal, "OpenSSL cannot set up AES-256-GCM");
    }
  }
  c->aad_.assign(kEnvelopeMagic);
  c->aad_.push_back(static_cast<char>(kFormatVersion));
  c->aad_.push_back(static_cast<char>(kSegmentLog2));
  c->aad_.append(reinterpret_cast<const char*>(c->prefix_.data()), c->prefix_.size());
  AppendPlace(&c->aad_, container, object_key);
  c->aad_fixed_ = c->aad_.size();
  c->aad_.resize(c->aad_fixed_ + 5);
  return c;
}

SegmentCipher::~SegmentCipher() {
  EVP_CIPHER_CTX_free(enc_);
  EVP_CIPHER_CTX_free(dec_);
  delete fast_;
}

void SegmentCipher::Nonce(uint64_t index, bool last, unsigned char* nonce) const {
  std::copy(prefix_.begin(), prefix_.end(), nonce);
  PutU32(nonce + kNoncePrefixBytes, static_cast<uint32_t>(index));
  nonce[11] = last ? 1 : 0;
}

void SegmentCipher::SetAadTail(uint64_t index, bool last) {
  auto* tail = reinterpret_cast<unsigned char*>(aad_.data() + aad_fixed_);
  PutU32(tail, static_cast<uint32_t>(index));
  tail[4] = last ? 1 : 0;
}

Status SegmentCipher::Seal(uint64_t index, bool last, std::string_view plaintext, std::string* out) {
  const size_t at = out->size();
  out->resize(at + std::min<size_t>(plaintext.size(), kSegmentBytes) + kTagBytes);
  Status sealed = SealTo(index, last, plaintext, out->data() + at);
  if (!sealed.ok()) out->resize(at);
  return sealed;
}

Status SegmentCipher::SealTo(uint64_t index, bool last, std::string_view plaintext, char* out) {
  // 2^32 segments of 64 KiB is 256 TiB; the index must not wrap, or nonces would repeat under one key.
  if (index > UINT32_MAX || plaintext.size() > kSegmentBytes) {
    return MakeError(ErrorKind::kTooLarge, where_ + ": an encrypted object is limited to 2^32 segments of 64 KiB");
  }
  unsigned char nonce[12];
  Nonce(index, last, nonce);
  SetAadTail(index, last);
  auto* dst = reinterpret_cast<unsigned char*>(out);
#ifdef IMGPIPE_HAVE_IPSEC_MB
  if (fast_ != nullptr) {
    alignas(64) gcm_context_data context;
    // A valid pointer even for an empty segment (an empty string_view's may be null).
    const auto* src = plaintext.empty() ? dst : reinterpret_cast<const unsigned char*>(plaintext.data());
    IMB_AES256_GCM_ENC(fast_->manager, &fast_->key, &context, dst, src, plaintext.size(), nonce,
                       reinterpret_cast<const unsigned char*>(aad_.data()), aad_.size(), dst + plaintext.size(),
                       kTagBytes);
    OPENSSL_cleanse(&context, sizeof context);
    return Ok();
  }
#endif
  int len = 0;
  bool ok = EVP_EncryptInit_ex(enc_, nullptr, nullptr, nullptr, nonce) == 1 &&
            EVP_EncryptUpdate(enc_, nullptr, &len, reinterpret_cast<const unsigned char*>(aad_.data()),
                              static_cast<int>(aad_.size())) == 1 &&
            EVP_EncryptUpdate(enc_, dst, &len, reinterpret_cast<const unsigned char*>(plaintext.data()),
                              static_cast<int>(plaintext.size())) == 1 &&
            EVP_EncryptFinal_ex(enc_, dst + len, &len) == 1 &&
            EVP_CIPHER_CTX_ctrl(enc_, EVP_CTRL_GCM_GET_TAG, kTagBytes, dst + plaintext.size()) == 1;
  if (!ok) return MakeError(ErrorKind::kInternal, where_ + ": AES-256-GCM encryption failed");
  return Ok();
}

Result<size_t> SegmentCipher::OpenTo(uint64_t index, bool last, const char* sealed, size_t size, char* out) {
  if (size < kTagBytes || size > kSealedSegmentBytes || index > UINT32_MAX) {
    return MakeError(ErrorKind::kIntegrity, where_ + ": segment " + std::to_string(index) + " has an impossible size",
                     "integrity_error");
  }
  unsigned char nonce[12];
  Nonce(index, last, nonce);
  SetAadTail(index, last);
  size_t text = size - kTagBytes;
  const auto* in = reinterpret_cast<const unsigned char*>(sealed);
  auto* p = reinterpret_cast<unsigned char*>(out);
  // The tag is copied first: when decrypting in place, the plaintext does not reach it (it ends where the tag
  // starts), but OpenSSL's ctrl wants a writable pointer.
  unsigned char tag[kTagBytes];
  std::copy_n(in + text, kTagBytes, tag);
  bool ok = false;
#ifdef IMGPIPE_HAVE_IPSEC_MB
  if (fast_ != nullptr) {
    // The library computes the tag of what it decrypted; comparing it is ours to do, in constant time.
    alignas(64) gcm_context_data context;
    unsigned char computed[kTagBytes];
    IMB_AES256_GCM_DEC(fast_->manager, &fast_->key, &context, p, text == 0 ? p : in, text, nonce,
                       reinterpret_cast<const unsigned char*>(aad_.data()), aad_.size(), computed, kTagBytes);
    OPENSSL_cleanse(&context, sizeof context);
    ok = CRYPTO_memcmp(computed, tag, kTagBytes) == 0;
  }
#endif
  if (fast_ == nullptr) {
    int len = 0;
    ok = EVP_DecryptInit_ex(dec_, nullptr, nullptr, nullptr, nonce) == 1 &&
         EVP_DecryptUpdate(dec_, nullptr, &len, reinterpret_cast<const unsigned char*>(aad_.data()),
                           static_cast<int>(aad_.size())) == 1 &&
         EVP_DecryptUpdate(dec_, p, &len, in, static_cast<int>(text)) == 1 &&
         EVP_CIPHER_CTX_ctrl(dec_, EVP_CTRL_GCM_SET_TAG, kTagBytes, tag) == 1 &&
         EVP_DecryptFinal_ex(dec_, p + len, &len) == 1;
  }
  if (!ok) {
    // `out` now holds unauthenticated bytes; wipe them so no caller can use them by mistake.
    OPENSSL_cleanse(out, text);
    return MakeError(ErrorKind::kIntegrity,
                     where_ + ": segment " + std::to_string(index) + (last ? " (last)" : "") +
                         " failed authentication: the object was modified, truncated, reordered or belongs elsewhere",
                     "integrity_error");
  }
  return text;
}

}  // namespace imgpipe
