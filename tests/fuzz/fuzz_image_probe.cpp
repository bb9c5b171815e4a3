// libFuzzer target: the whole upload validation (magic bytes, header probe, limits, strict decode) on arbitrary
// files, from a file and from memory (uploads that fit in the spool's memory are validated there). Inputs over 1 MiB are skipped and the limits are small (4 megapixels, 64 frames), as in libvips' own
// fuzzers, so each run stays fast and within memory; the code paths are the same as with the production limits.
// Any outcome is fine except a crash, a hang, a leak or kInternal.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "processing/image_probe.hpp"

namespace {

std::string TempPath() {
  // One file per process, reused for every input.
  static const std::string path = [] {
    const char* dir = std::getenv("TMPDIR");
    return std::string(dir != nullptr ? dir : "/tmp") + "/imgpipe-fuzz-probe-" + std::to_string(::getpid());
  }();
  return path;
}

}  // namespace

// Leaks outside our code, ignored so the fuzzer keeps looking for the rest:
// - libheif 1.15's dav1d plugin leaks the 40-byte dav1d_data when dav1d refuses an empty AV1 payload (valgrind
//   shows it for `vips copy` of the same file);
// - now and then, unreproducibly (not on re-running the input), a block g_malloc0'd by glib inside libvips' worker
//   threads. Uninstrumented glib stops the stack there, so this also hides GObject leaks; those are checked by the
//   unit tests under LeakSanitizer instead (processing_test in the debug preset runs every corpus file).
extern "C" const char* __lsan_default_suppressions() { return "leak:libdav1d.so\nleak:libglib-2.0.so\n"; }

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  imgpipe::InitVips(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 1024 * 1024) return -1;
  const std::string path = TempPath();
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr) std::abort();
  if (size > 0 && std::fwrite(data, 1, size, file) != size) std::abort();
  std::fclose(file);

  imgpipe::ImageLimits limits;
  limits.max_bytes = 1024 * 1024;
  limits.max_pixels = 4'000'000;
  limits.max_frames = 64;
  limits.max_dimension = 8192;
  const auto facts = imgpipe::ValidateImageFile(path, limits);
  if (!facts.ok() && facts.error().kind == imgpipe::ErrorKind::kInternal) std::abort();
  std::remove(path.c_str());
  const auto from_memory = imgpipe::ValidateImageBuffer(std::string_view(reinterpret_cast<const char*>(data), size),
                                                        limits);
  if (!from_memory.ok() && from_memory.error().kind == imgpipe::ErrorKind::kInternal) std::abort();
  return 0;
}
