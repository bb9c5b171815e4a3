#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"
#include "scripts/script_manifest.hpp"

namespace imgpipe {

//! What one run of a Lua file may use. Each limit, when hit, stops the run with an error naming it.
struct LuaLimits {
  uint64_t max_instructions = 200'000'000;     //!< VM instructions, counted in steps of 1000
  size_t max_memory_bytes = 64u << 20;         //!< everything the Lua state allocates
  std::chrono::milliseconds timeout{10'000};   //!< wall clock, checked with the instruction count
};

//! What a Lua script can reach: the current image and the run. Implemented by the script runner. Called on the
//! thread running RunLua. A method's error is raised in Lua as an error with its message (catchable by pcall).
class LuaHost {
 public:
  virtual ~LuaHost() = default;
  virtual int Width() = 0;
  virtual int Height() = 0;
  virtual std::string Format() = 0;  //!< the original's format ("jpeg", ...)
  virtual std::optional<std::string> Metadata(const std::string& name) = 0;
  virtual std::vector<std::string> MetadataNames() = 0;
  //! Applies a built-in step to the current image.
  virtual Status Apply(const ScriptStep& step) = 0;
  //! Encodes the current image as a rendition named `name`.
  virtual Status AddRendition(const std::string& name, const std::string& format, int quality, int effort) = 0;
  virtual Status Label(const std::string& key, const std::string& value, std::optional<double> number) = 0;
  //! The script refuses the image; the run stops after this call.
  virtual void Reject(const std::string& reason) = 0;
};

//! kInvalidArgument "<file>:<line>: <problem>" if `code` is not valid Lua 5.4 source (bytecode is refused too).
Status CheckLuaSyntax(std::string_view code, const std::string& file);

//! Runs `code` (the Lua file `file`) in a fresh sandboxed Lua state with the `image` and `run` API (docs/SCRIPTS.md):
//! only the base (without dofile, loadfile, collectgarbage, print; `load` takes text chunks only), string (without
//! dump), table, math and utf8 libraries; no io, os, package, require or debug. Errors are kInvalidArgument with
//! the file and line for script errors (code "script_error"), and code "script_limit" when a limit of `limits` stopped
//! it. A script that called run.reject() returns ok (the host recorded the reason). The state is closed before
//! return: nothing of it outlives the call. Thread-safe (one state per call).
Status RunLua(std::string_view code, const std::string& file, const LuaLimits& limits, LuaHost& host);

}  // namespace imgpipe
