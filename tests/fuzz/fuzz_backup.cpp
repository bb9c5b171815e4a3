// What `imgpipe restore` reads from a backup folder is outside input: the manifest and the sealed keyring. Any bytes
// must parse or be refused with kIntegrity (manifest) / kIntegrity or kPermissionDenied (keyring), never crash, and
// a sealed keyring must never make scrypt ask for more than its bounded memory.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "backup/backup_manifest.hpp"
#include "backup/passphrase_seal.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > 65536) return 0;
  std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  if (data[0] % 2 == 0) {
    auto m = imgpipe::ParseBackupManifest(text);
    if (!m.ok() && m.error().kind != imgpipe::ErrorKind::kIntegrity) std::abort();
    if (m.ok()) {
      // A restored blob must land inside the data folder: no absolute key, no ".." segment.
      for (const auto& b : m->blobs) {
        if (b.key.empty() || b.key.front() == '/' || ("/" + b.key + "/").find("/../") != std::string::npos) {
          std::abort();
        }
      }
    }
  } else {
    auto opened = imgpipe::OpenWithPassphrase(text, "fuzzing passphrase");
    if (!opened.ok() && opened.error().kind != imgpipe::ErrorKind::kIntegrity &&
        opened.error().kind != imgpipe::ErrorKind::kPermissionDenied) {
      std::abort();
    }
  }
  return 0;
}
