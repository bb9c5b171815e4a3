// pipeline.toml is outside input (any engineer with the admin role pushes one). Any bytes must parse or fail with
// kInvalidArgument naming pipeline.toml and a line, never crash; a manifest that parses holds only documented values.
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>

#include "scripts/script_manifest.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 64 * 1024) return 0;  // pushes are limited to 1 MiB in all; bigger inputs only slow the fuzzer down
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const std::map<std::string, std::string> files = {{"pipeline.toml", std::string(text)}, {"a.lua", "return"}};
  auto manifest = imgpipe::ParseScriptManifest(text, files);
  if (!manifest.ok()) {
    if (manifest.error().kind != imgpipe::ErrorKind::kInvalidArgument) std::abort();
    if (manifest.error().message.rfind("pipeline.toml:", 0) != 0) std::abort();
    return 0;
  }
  auto check_step = [](const imgpipe::ScriptStep& s) {
    if (s.width < 0 || s.width > 16384 || s.height < 0 || s.height > 16384) std::abort();
    if (s.quality < 1 || s.quality > 100 || s.effort < 0 || s.effort > 9) std::abort();
    if (s.op == "lua" && s.file != "a.lua") std::abort();
    if (s.op == "exec" && (s.command.empty() || s.timeout < 1 || s.timeout > 3600 || s.memory < 16)) std::abort();
  };
  for (const auto& s : manifest->steps) check_step(s);
  for (const auto& r : manifest->renditions) {
    if (r.name.empty() || r.name.size() > 64) std::abort();
    if (!imgpipe::IsRenditionFormat(r.format)) std::abort();
    for (const auto& s : r.steps) {
      check_step(s);
      if (s.op == "lua" || s.op == "exec") std::abort();
    }
  }
  return 0;
}
