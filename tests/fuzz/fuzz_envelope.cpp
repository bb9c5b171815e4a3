// Encrypted object headers and keyring files are read back from storage that an attacker may have written to:
// any bytes must parse to a clear error or to a header whose encoding is canonical (re-serialising it gives the same
// bytes), and stored sizes map to plaintext sizes and back exactly. The first byte picks the parser.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "crypto/envelope_format.hpp"
#include "crypto/local/local_key_provider.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > 16384) return 0;
  std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
  if (data[0] % 2 == 0) {
    auto header = imgpipe::ParseHeader(input);
    if (header.ok()) {
      auto again = imgpipe::SerializeHeader(*header);
      if (!again.ok() || *again != input.substr(0, imgpipe::kHeaderBytes)) std::abort();
    }
    uint64_t stored = 0;
    for (size_t i = 0; i < 8 && i < input.size(); ++i) stored = (stored << 8) | static_cast<uint8_t>(input[i]);
    stored %= (uint64_t{1} << 50);
    auto plain = imgpipe::PlaintextSize(stored);
    if (plain.ok() && imgpipe::CiphertextSize(*plain) != stored) std::abort();
  } else {
    auto ring = imgpipe::ParseKeyring(input);
    if (ring.ok() && ring->versions.empty()) std::abort();
  }
  return 0;
}
