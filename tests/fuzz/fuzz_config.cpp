// Config files and overrides are outside input (an operator's typo, a hostile ConfigMap). Any bytes must load or fail
// with kInvalidArgument, never crash, and a config that loads must hold only values inside the documented bounds.
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>

#include "config/config.hpp"

namespace {

void CheckLoaded(const imgpipe::Result<imgpipe::Config>& r) {
  if (!r.ok()) {
    if (r.error().kind != imgpipe::ErrorKind::kInvalidArgument || r.error().message.empty()) std::abort();
    return;
  }
  const imgpipe::Config& c = *r;
  if (c.listen.empty() || c.data_dir.empty() || c.allowed_formats.empty() || c.max_bytes == 0) std::abort();
  if (c.max_attempts < 1 || c.max_frames < 1 || c.max_dimension < 1 || c.sweep_interval.count() < 1) std::abort();
  for (const auto& rendition : c.renditions) {
    if (rendition.name.empty() || rendition.name.size() > 32) std::abort();
    if (rendition.width < 1 || rendition.width > 16384 || rendition.height < 1 || rendition.height > 16384) std::abort();
    if (rendition.quality < 1 || rendition.quality > 100) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);

  // The input as a whole config file.
  CheckLoaded(imgpipe::LoadConfigFromString(text, "fuzz.toml"));

  // The input as override text, through the same value parser, for keys of each kind.
  if (size <= 4096) {
    std::string value(text);
    for (const char* key : {"server.listen", "limits.max_bytes", "limits.allowed_formats", "retention.originals",
                            "processing.enabled", "server.threads"}) {
      imgpipe::ConfigSources sources;
      sources.flags[key] = value;
      CheckLoaded(imgpipe::LoadConfig(sources));
    }
    imgpipe::ConfigSources env;
    env.env["IMGPIPE_" + value] = "1";  // the input as a variable name
    CheckLoaded(imgpipe::LoadConfig(env));
    (void)imgpipe::ParseDuration(text);
    (void)imgpipe::ParseByteSize(text);
  }
  return 0;
}
