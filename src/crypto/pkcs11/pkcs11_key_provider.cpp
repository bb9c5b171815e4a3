#include "crypto/pkcs11/pkcs11_key_provider.hpp"

#include <dlfcn.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <p11-kit/pkcs11.h>

#include <charconv>
#include <cstdio>
#include <vector>

namespace imgpipe {

namespace {

constexpr size_t kIvBytes = 12;
// Versions other processes add are picked up at most this long after they appear (or at once when asked for).
constexpr auto kVersionRefresh = std::chrono::seconds(5);

std::string Rv(CK_RV rv) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "CKR 0x%lx", static_cast<unsigned long>(rv));
  switch (rv) {
    case CKR_PIN_INCORRECT: return std::string(buf) + " (PIN incorrect)";
    case CKR_TOKEN_NOT_PRESENT: return std::string(buf) + " (token not present)";
    case CKR_DEVICE_REMOVED: return std::string(buf) + " (device removed)";
    case CKR_SESSION_HANDLE_INVALID: return std::string(buf) + " (session handle invalid)";
    case CKR_KEY_HANDLE_INVALID: return std::string(buf) + " (key handle invalid)";
    case CKR_OBJECT_HANDLE_INVALID: return std::string(buf) + " (object handle invalid)";
    case CKR_MECHANISM_INVALID: return std::string(buf) + " (mechanism not supported by the token)";
    default: return buf;
  }
}

// The label as the token stores it: 32 bytes, space padded.
std::string TokenLabel(const unsigned char (&label)[32]) {
  std::string s(reinterpret_cast<const char*>(label), 32);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
  return s;
}

}  // namespace

struct Pkcs11KeyProvider::Impl {
  Options options;
  const Clock& clock;
  void* lib = nullptr;
  CK_FUNCTION_LIST* f = nullptr;
  bool initialized = false;
  bool connected = false;
  CK_SESSION_HANDLE session = 0;
  std::map<uint32_t, CK_OBJECT_HANDLE> versions;
  TimePoint versions_loaded{};
  std::mutex mu;

  Impl(Options o, const Clock& c) : options(std::move(o)), clock(c) {}

  Error Unavailable(const std::string& what) {
    return MakeError(ErrorKind::kUnavailable, "pkcs11 token \"" + options.token_label + "\": " + what);
  }
  // A failed call: the session may be dead (token gone); drop it so the next call starts afresh.
  Error Failed(const std::string& call, CK_RV rv) {
    Disconnect();
    return Unavailable(call + " failed: " + Rv(rv));
  }

  Status LoadModule() {
    if (f != nullptr) return Ok();
    lib = ::dlopen(options.module.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
      const char* why = ::dlerror();
      return MakeError(ErrorKind::kUnavailable, "cannot load the PKCS#11 module " + options.module + ": " +
                                                    (why ? why : "unknown error") +
                                                    " (encryption.pkcs11_module)");
    }
    auto get = reinterpret_cast<CK_C_GetFunctionList>(::dlsym(lib, "C_GetFunctionList"));
    if (get == nullptr || get(&f) != CKR_OK || f == nullptr) {
      f = nullptr;
      return MakeError(ErrorKind::kUnavailable, options.module + " is not a PKCS#11 module (no C_GetFunctionList)");
    }
    return Ok();
  }

  void Disconnect() {
    if (connected) f->C_CloseSession(session);
    connected = false;
    versions.clear();
  }

  Status Connect() {
    if (connected) return Ok();
    IMGPIPE_TRY(LoadModule());
    // Re-initialising makes the module look at its slots again: a token that went away and came back is found.
    if (initialized) {
      f->C_Finalize(nullptr);
      initialized = false;
    }
    CK_C_INITIALIZE_ARGS init_args{};
    init_args.flags = CKF_OS_LOCKING_OK;
    CK_RV rv = f->C_Initialize(&init_args);
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) return Unavailable("C_Initialize failed: " + Rv(rv));
    initialized = true;
    CK_ULONG count = 0;
    if ((rv = f->C_GetSlotList(CK_TRUE, nullptr, &count)) != CKR_OK) return Unavailable("C_GetSlotList: " + Rv(rv));
    std::vector<CK_SLOT_ID> slots(count);
    if (count > 0 && (rv = f->C_GetSlotList(CK_TRUE, slots.data(), &count)) != CKR_OK) {
      return Unavailable("C_GetSlotList: " + Rv(rv));
    }
    slots.resize(count);
    std::optional<CK_SLOT_ID> slot;
    for (CK_SLOT_ID id : slots) {
      CK_TOKEN_INFO info{};
      if (f->C_GetTokenInfo(id, &info) == CKR_OK && TokenLabel(info.label) == options.token_label) {
        slot = id;
        break;
      }
    }
    if (!slot) {
      return Unavailable("no such token in " + options.module + " (" + std::to_string(count) +
                         " tokens present); check encryption.pkcs11_token and that the token is plugged in");
    }
    if ((rv = f->C_OpenSession(*slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &session)) != CKR_OK) {
      return Unavailable("C_OpenSession failed: " + Rv(rv));
    }
    connected = true;
    rv = f->C_Login(session, CKU_USER, reinterpret_cast<unsigned char*>(options.pin.data()), options.pin.size());
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
      Disconnect();
      return Unavailable("login failed: " + Rv(rv) + "; check the PIN (IMGPIPE_ENCRYPTION_PKCS11_PIN)");
    }
    IMGPIPE_TRY(LoadVersions());
    if (versions.empty()) IMGPIPE_TRY(CreateVersion(1));
    return Ok();
  }

  std::string Label(uint32_t version) const { return options.key_label + ".v" + std::to_string(version); }

  Status LoadVersions() {
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_ATTRIBUTE find[] = {{CKA_CLASS, &cls, sizeof cls}};
    CK_RV rv = f->C_FindObjectsInit(session, find, 1);
    if (rv != CKR_OK) return Failed("C_FindObjectsInit", rv);
    std::vector<CK_OBJECT_HANDLE> found;
    for (;;) {
      CK_OBJECT_HANDLE batch[64];
      CK_ULONG n = 0;
      if ((rv = f->C_FindObjects(session, batch, 64, &n)) != CKR_OK) {
        f->C_FindObjectsFinal(session);
        return Failed("C_FindObjects", rv);
      }
      if (n == 0) break;
      found.insert(found.end(), batch, batch + n);
    }
    f->C_FindObjectsFinal(session);
    std::map<uint32_t, CK_OBJECT_HANDLE> loaded;
    const std::string prefix = options.key_label + ".v";
    for (CK_OBJECT_HANDLE h : found) {
      char label[128];
      CK_ATTRIBUTE attr = {CKA_LABEL, label, sizeof label};
      if (f->C_GetAttributeValue(session, h, &attr, 1) != CKR_OK) continue;
      std::string_view text(label, attr.ulValueLen);
      if (text.substr(0, prefix.size()) != prefix) continue;
      uint32_t version = 0;
      std::string_view digits = text.substr(prefix.size());
      auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), version);
      if (ec == std::errc() && end == digits.data() + digits.size() && version > 0) loaded[version] = h;
    }
    versions = std::move(loaded);
    versions_loaded = clock.Now();
    return Ok();
  }

  Status RefreshVersions(bool force) {
    TimePoint now = clock.Now();
    if (!force && now >= versions_loaded && now - versions_loaded < kVersionRefresh) return Ok();
    return LoadVersions();
  }

  Status CreateVersion(uint32_t version) {
    CK_MECHANISM mech = {CKM_AES_KEY_GEN, nullptr, 0};
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE type = CKK_AES;
    CK_ULONG len = 32;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    std::string label = Label(version);
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof cls},         {CKA_KEY_TYPE, &type, sizeof type},
        {CKA_VALUE_LEN, &len, sizeof len},     {CKA_TOKEN, &yes, sizeof yes},
        {CKA_PRIVATE, &yes, sizeof yes},       {CKA_SENSITIVE, &yes, sizeof yes},
        {CKA_EXTRACTABLE, &no, sizeof no},     {CKA_ENCRYPT, &yes, sizeof yes},
        {CKA_DECRYPT, &yes, sizeof yes},       {CKA_LABEL, label.data(), label.size()},
    };
    CK_OBJECT_HANDLE h = 0;
    CK_RV rv = f->C_GenerateKey(session, &mech, tmpl, sizeof tmpl / sizeof tmpl[0], &h);
    if (rv != CKR_OK) return Failed("generating KEK " + label + " (C_GenerateKey)", rv);
    versions[version] = h;
    return Ok();
  }

  //! AES-GCM on the token: encrypt (`seal`) or decrypt `in` under the KEK `key`.
  Result<std::string> Gcm(bool seal, CK_OBJECT_HANDLE key, std::string_view aad, std::string_view iv,
                          std::string_view in) {
    std::string iv_copy(iv), aad_copy(aad), in_copy(in);
    CK_GCM_PARAMS params{};
    params.pIv = reinterpret_cast<unsigned char*>(iv_copy.data());
    params.ulIvLen = iv_copy.size();
    params.ulIvBits = iv_copy.size() * 8;
    params.pAAD = reinterpret_cast<unsigned char*>(aad_copy.data());
    params.ulAADLen = aad_copy.size();
    params.ulTagBits = 128;
    CK_MECHANISM mech = {CKM_AES_GCM, &params, sizeof params};
    CK_RV rv = seal ? f->C_EncryptInit(session, &mech, key) : f->C_DecryptInit(session, &mech, key);
    if (rv != CKR_OK) return Failed(seal ? "C_EncryptInit" : "C_DecryptInit", rv);
    std::string out(in.size() + 16, '\0');
    CK_ULONG out_len = out.size();
    auto* src = reinterpret_cast<unsigned char*>(in_copy.data());
    auto* dst = reinterpret_cast<unsigned char*>(out.data());
    rv = seal ? f->C_Encrypt(session, src, in_copy.size(), dst, &out_len)
              : f->C_Decrypt(session, src, in_copy.size(), dst, &out_len);
    OPENSSL_cleanse(in_copy.data(), in_copy.size());
    // Modules report a tag mismatch differently (SoftHSM2: CKR_GENERAL_ERROR). It is a bad wrapped key, not a dead
    // token, if the token still answers for the key right after.
    bool bad_input = rv == CKR_ENCRYPTED_DATA_INVALID || rv == CKR_ENCRYPTED_DATA_LEN_RANGE;
    if (!seal && rv != CKR_OK && !bad_input) {
      CK_ULONG len_value = 0;
      CK_ATTRIBUTE probe = {CKA_VALUE_LEN, &len_value, sizeof len_value};
      bad_input = f->C_GetAttributeValue(session, key, &probe, 1) == CKR_OK;
    }
    if (bad_input) {
      OPENSSL_cleanse(out.data(), out.size());
      return MakeError(ErrorKind::kIntegrity, "wrapped key does not open under its key-encryption key",
                       "integrity_error");
    }
    if (rv != CKR_OK) return Failed(seal ? "C_Encrypt" : "C_Decrypt", rv);
    out.resize(out_len);
    return out;
  }
};

Pkcs11KeyProvider::Pkcs11KeyProvider(Options options, const Clock& clock)
    : impl_(std::make_unique<Impl>(std::move(options), clock)) {}

Pkcs11KeyProvider::~Pkcs11KeyProvider() {
  if (impl_->f != nullptr) {
    impl_->Disconnect();
    if (impl_->initialized) impl_->f->C_Finalize(nullptr);
  }
  if (impl_->lib != nullptr) ::dlclose(impl_->lib);
  OPENSSL_cleanse(impl_->options.pin.data(), impl_->options.pin.size());
}

Result<std::unique_ptr<Pkcs11KeyProvider>> Pkcs11KeyProvider::Open(Options options, const Clock& clock,
                                                                   bool connect_now) {
  if (options.key_label.empty() || options.key_label.size() > kMaxKeyIdBytes) {
    return MakeError(ErrorKind::kInvalidArgument,
                     "pkcs11 key label must be 1.." + std::to_string(kMaxKeyIdBytes) + " characters");
  }
  std::unique_ptr<Pkcs11KeyProvider> p(new Pkcs11KeyProvider(std::move(options), clock));
  std::lock_guard lock(p->impl_->mu);
  Status connected = p->impl_->Connect();
  if (!connected.ok() && connect_now) return connected.error();
  return p;
}

Result<WrappedKey> Pkcs11KeyProvider::Wrap(const DataKey& key, std::string_view aad) {
  Impl& m = *impl_;
  std::lock_guard lock(m.mu);
  IMGPIPE_TRY(m.Connect());
  IMGPIPE_TRY(m.RefreshVersions(false));
  if (m.versions.empty()) return m.Unavailable("no KEK version on the token");
  auto [version, handle] = *m.versions.rbegin();
  std::string iv(kIvBytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(iv.data()), kIvBytes) != 1) {
    return MakeError(ErrorKind::kInternal, "no randomness for a key wrapping IV");
  }
  IMGPIPE_ASSIGN_OR_RETURN(
      std::string sealed,
      m.Gcm(true, handle, aad, iv, std::string_view(reinterpret_cast<const char*>(key.data()), key.size())));
  return WrappedKey{m.options.key_label, version, WrapAlgorithm::kAes256Gcm, iv + sealed};
}

Result<DataKey> Pkcs11KeyProvider::Unwrap(const WrappedKey& wrapped, std::string_view aad) {
  Impl& m = *impl_;
  if (wrapped.key_id != m.options.key_label) {
    return MakeError(ErrorKind::kNotFound, "wrapped by KEK \"" + wrapped.key_id + "\", but this token's KEK label is \"" +
                                               m.options.key_label + "\" (encryption.pkcs11_key_label)");
  }
  if (wrapped.bytes.size() < kIvBytes + 16) {
    return MakeError(ErrorKind::kIntegrity, "wrapped key is too short", "integrity_error");
  }
  std::lock_guard lock(m.mu);
  IMGPIPE_TRY(m.Connect());
  if (!m.versions.count(wrapped.version)) IMGPIPE_TRY(m.RefreshVersions(true));
  auto it = m.versions.find(wrapped.version);
  if (it == m.versions.end()) {
    return MakeError(ErrorKind::kNotFound, "KEK " + m.Label(wrapped.version) + " is not on the token (retired?)");
  }
  std::string_view bytes = wrapped.bytes;
  IMGPIPE_ASSIGN_OR_RETURN(std::string plain, m.Gcm(false, it->second, aad, bytes.substr(0, kIvBytes),
                                                    bytes.substr(kIvBytes)));
  auto key = DataKey::FromBytes(plain);
  OPENSSL_cleanse(plain.data(), plain.size());
  if (!key) return MakeError(ErrorKind::kIntegrity, "unwrapped data key has the wrong length", "integrity_error");
  return *key;
}

Result<std::vector<KekVersion>> Pkcs11KeyProvider::Versions() {
  Impl& m = *impl_;
  std::lock_guard lock(m.mu);
  IMGPIPE_TRY(m.Connect());
  IMGPIPE_TRY(m.RefreshVersions(true));
  std::vector<KekVersion> out;
  for (const auto& entry : m.versions) out.push_back(KekVersion{entry.first, TimePoint{}, false});
  if (!out.empty()) out.back().current = true;
  return out;
}

Result<KekVersion> Pkcs11KeyProvider::Rotate() {
  Impl& m = *impl_;
  std::lock_guard lock(m.mu);
  IMGPIPE_TRY(m.Connect());
  IMGPIPE_TRY(m.RefreshVersions(true));
  uint32_t next = m.versions.empty() ? 1 : m.versions.rbegin()->first + 1;
  IMGPIPE_TRY(m.CreateVersion(next));
  return KekVersion{next, m.clock.Now(), true};
}

Status Pkcs11KeyProvider::Retire(uint32_t version) {
  Impl& m = *impl_;
  std::lock_guard lock(m.mu);
  IMGPIPE_TRY(m.Connect());
  IMGPIPE_TRY(m.RefreshVersions(true));
  auto it = m.versions.find(version);
  if (it == m.versions.end()) {
    return MakeError(ErrorKind::kNotFound, "KEK " + m.Label(version) + " is not on the token");
  }
  if (version == m.versions.rbegin()->first) {
    return MakeError(ErrorKind::kConflict, "KEK version " + std::to_string(version) +
                                               " is the current one; rotate first, then rewrap, then retire it");
  }
  CK_RV rv = m.f->C_DestroyObject(m.session, it->second);
  if (rv != CKR_OK) return m.Failed("C_DestroyObject", rv);
  m.versions.erase(it);
  return Ok();
}

Status Pkcs11KeyProvider::Ping() {
  Impl& m = *impl_;
  std::lock_guard lock(m.mu);
  IMGPIPE_TRY(m.Connect());
  // A cheap call that needs the token and the current KEK object: fails once either is gone.
  if (m.versions.empty()) return m.Unavailable("no KEK version on the token");
  CK_ULONG len_value = 0;
  CK_ATTRIBUTE attr = {CKA_VALUE_LEN, &len_value, sizeof len_value};
  CK_RV rv = m.f->C_GetAttributeValue(m.session, m.versions.rbegin()->second, &attr, 1);
  if (rv != CKR_OK) return m.Failed("reading the current KEK's attributes", rv);
  return Ok();
}

}  // namespace imgpipe
