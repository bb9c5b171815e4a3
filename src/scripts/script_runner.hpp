#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/result.hpp"
#include "processing/pipeline.hpp"
#include "scripts/exec_sandbox.hpp"
#include "scripts/lua_sandbox.hpp"
#include "scripts/script_store.hpp"

namespace imgpipe {

//! A fact a script states about an image; lands in the warehouse's labels table.
struct ScriptLabel {
  std::string key;
  std::string value;
  std::optional<double> number;
};

struct ScriptRunOutput {
  std::vector<RenditionOutput> renditions;  //!< the manifest's renditions in order, then those Lua added
  std::vector<ScriptLabel> labels;          //!< in the order the steps emitted them
  std::optional<uint64_t> phash;            //!< set by a `phash` step
  std::optional<std::string> dominant_colour;  //!< set by a `dominant-colour` step
  std::optional<std::string> rejected;      //!< the reason, when a Lua step called run.reject()
};

//! Limits of one run, beyond each Lua step's own.
struct ScriptRunLimits {
  LuaLimits lua;
  size_t max_renditions = 32;
  size_t max_labels = 1000;
  size_t max_label_bytes = 4096;  //!< key + value of one label
  ExecSandboxOptions exec;        //!< how `exec` steps run (config [processing] exec_*)
  uint64_t max_output_pixels = 100'000'000;  //!< largest image an exec step may hand back
};

//! Runs `script` on the image file at `path`: decode (shrink-on-load when the script starts with thumbnail), the
//! main steps in order, then each rendition from the result. Renditions are 8-bit sRGB (or greyscale), metadata
//! stripped. A rejected image stops the run with `rejected` set and no renditions. Errors: kUnsupportedFormat /
//! kInvalidImage for images that cannot be decoded, kInvalidArgument for script errors and limits (the message
//! names the file and line), kInternal for libvips failures. Thread-safe. Requires InitVips() first.
Result<ScriptRunOutput> RunScript(const ScriptBundle& script, const std::string& path,
                                  const ScriptRunLimits& limits = {});

}  // namespace imgpipe
