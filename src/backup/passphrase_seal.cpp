#include "backup/passphrase_seal.hpp"

#include <boost/json.hpp>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "crypto/secret_file.hpp"
#include "core/ids.hpp"
#include "crypto/envelope_format.hpp"

namespace imgpipe {

namespace json = boost::json;

namespace {

constexpr std::string_view kAad = "imgpipe keyring backup v1";
constexpr int kLogN = 15;  // 32 MiB and ~0.1 s a derivation on a 2020s core: slow for guessing, quick for one restore
constexpr int kR = 8;
constexpr int kP = 1;
// What a sealed file may ask for: at most 256 MiB of scrypt memory (128 * r * 2^log_n) and 4 passes.
constexpr int kMaxLogN = 18;
constexpr int kMaxR = 16;
constexpr int kMaxP = 4;
constexpr uint64_t kMaxScryptMemory = 256ull << 20;

Error Malformed(const std::string& what) {
  return MakeError(ErrorKind::kIntegrity, "sealed keyring: " + what + "; the backup is damaged");
}

Result<std::string> DeriveKey(std::string_view passphrase, std::string_view salt, int log_n, int r, int p) {
  std::string key(32, '\0');
  const uint64_t n = uint64_t{1} << log_n;
  // scrypt needs 128 * r * N bytes (bounded by the callers); allow that and a little more.
  const uint64_t max_mem = 128 * static_cast<uint64_t>(r) * n + (1 << 20);
  if (EVP_PBE_scrypt(passphrase.data(), passphrase.size(), reinterpret_cast<const unsigned char*>(salt.data()),
                     salt.size(), n, static_cast<uint64_t>(r), static_cast<uint64_t>(p), max_mem,
                     reinterpret_cast<unsigned char*>(key.data()), key.size()) != 1) {
    return MakeError(ErrorKind::kInternal, "scrypt failed (out of memory?)");
  }
  return key;
}

}  // namespace

Result<std::string> SealWithPassphrase(std::string_view plaintext, std::string_view passphrase) {
  if (passphrase.size() < kMinPassphrase) {
    return MakeError(ErrorKind::kInvalidArgument, "the backup passphrase is shorter than " +
                                                      std::to_string(kMinPassphrase) + " characters");
  }
  const std::string salt = RandomBytes(16);
  IMGPIPE_ASSIGN_OR_RETURN(std::string key, DeriveKey(passphrase, salt, kLogN, kR, kP));
  auto sealed = AesGcmSeal(reinterpret_cast<const unsigned char*>(key.data()), kAad, plaintext);
  OPENSSL_cleanse(key.data(), key.size());
  if (!sealed.ok()) return sealed.error();
  json::object doc{{"format", 1}, {"kdf", "scrypt"}, {"log_n", kLogN}, {"r", kR}, {"p", kP},
                   {"salt", HexEncode(salt)}, {"sealed", HexEncode(*sealed)}};
  return json::serialize(doc) + "\n";
}

Result<std::string> OpenWithPassphrase(std::string_view text, std::string_view passphrase) {
  boost::system::error_code ec;
  json::value root = json::parse(text, ec);
  if (ec || !root.is_object()) return Malformed("not a JSON object");
  const json::object& doc = root.as_object();
  auto integer = [&](const char* name, int lo, int hi, int* out) {
    const json::value* v = doc.if_contains(name);
    if (!v || !v->is_int64() || v->as_int64() < lo || v->as_int64() > hi) return false;
    *out = static_cast<int>(v->as_int64());
    return true;
  };
  int format = 0, log_n = 0, r = 0, p = 0;
  if (!integer("format", 1, 1, &format)) return Malformed("\"format\" is not 1");
  const json::value* kdf = doc.if_contains("kdf");
  if (!kdf || !kdf->is_string() || kdf->as_string() != "scrypt") return Malformed("\"kdf\" is not scrypt");
  if (!integer("log_n", 10, kMaxLogN, &log_n) || !integer("r", 1, kMaxR, &r) || !integer("p", 1, kMaxP, &p)) {
    return Malformed("scrypt parameters out of range");
  }
  if (128 * static_cast<uint64_t>(r) * (uint64_t{1} << log_n) > kMaxScryptMemory) {
    return Malformed("scrypt parameters ask for more than 256 MiB");
  }
  std::string salt, sealed;
  const json::value* s = doc.if_contains("salt");
  const json::value* c = doc.if_contains("sealed");
  if (!s || !s->is_string() || !HexDecode(s->as_string(), &salt) || salt.size() < 16 || salt.size() > 64) {
    return Malformed("\"salt\" is not 16 to 64 bytes of hex");
  }
  if (!c || !c->is_string() || !HexDecode(c->as_string(), &sealed) || sealed.size() < 28) {
    return Malformed("\"sealed\" is not hex of at least an IV and a tag");
  }
  IMGPIPE_ASSIGN_OR_RETURN(std::string key, DeriveKey(passphrase, salt, log_n, r, p));
  auto opened = AesGcmOpen(reinterpret_cast<const unsigned char*>(key.data()), kAad, sealed);
  OPENSSL_cleanse(key.data(), key.size());
  if (!opened.ok()) {
    return MakeError(ErrorKind::kPermissionDenied,
                     "the backup passphrase is wrong (or the sealed keyring was altered): the keyring does not open");
  }
  return opened;
}

}  // namespace imgpipe
