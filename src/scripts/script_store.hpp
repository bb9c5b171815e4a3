#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/clock.hpp"
#include "core/result.hpp"
#include "scripts/exec_sandbox.hpp"
#include "scripts/script_manifest.hpp"
#include "storage/blob_store.hpp"

namespace imgpipe {

//! One immutable version of a script: every file of its folder. `version` is the SHA-256 (hex) of the files, so the
//! same folder pushed twice is the same version.
struct ScriptBundle {
  std::string name;
  std::string version;
  std::string pushed_at;                       //!< RFC 3339 UTC, when this version was first stored
  std::map<std::string, std::string> files;    //!< path inside the folder -> content
  ScriptManifest manifest;                     //!< parsed pipeline.toml
};

struct ScriptSummary {
  std::string name;
  std::string current_version;
  std::string description;
  std::vector<std::string> history;  //!< versions that were current, oldest first; the last is current
};

//! Scripts in the `scripts` container of a BlobStore. Layout (documented in docs/SCRIPTS.md):
//!   <name>/versions/<sha256>.json  one object per version: {name, version, pushed_at, files: {path: text}}; written
//!                                  once, never changed
//!   <name>/current                 {"version": "<sha256>"}: the version new jobs run
//!   <name>/history                 {"versions": [...]}: every version made current, oldest first
//! The version object is committed before `current` moves, so a crash never leaves `current` naming a missing
//! version. Push and Rollback of one script are not meant to race each other (admin operations); the last writer of
//! `current` wins. Thread-safe as the BlobStore is.
class ScriptStore {
 public:
  //! Limits of what a push may hold, so a script stays small enough to cache in every worker.
  static constexpr size_t kMaxFiles = 64;
  static constexpr size_t kMaxBytes = 1 << 20;

  //! `blobs` and `clock` must outlive the store. `exec` is how exec steps run for a push's example run.
  ScriptStore(BlobStore& blobs, const Clock& clock, ExecSandboxOptions exec = {})
      : blobs_(blobs), clock_(clock), exec_(std::move(exec)) {}

  //! Validates the files (pipeline.toml parses, steps are known, lua files exist and compile, names and sizes are
  //! in limits), runs the script over its `example` image when pipeline.toml names one (in the same sandboxes and
  //! limits as a worker; a failure or a rejection refuses the push), stores the version and makes it current.
  //! kInvalidArgument naming the file, line and problem.
  Result<ScriptBundle> Push(const std::string& name, const std::map<std::string, std::string>& files);
  //! Every script with a current version, by name.
  Result<std::vector<ScriptSummary>> List();
  //! kNotFound when the script has never been pushed.
  Result<ScriptSummary> Show(const std::string& name);
  //! The current version of `name`, or kNotFound.
  Result<std::string> CurrentVersion(const std::string& name);
  //! One stored version, parsed. kNotFound if missing.
  Result<ScriptBundle> Get(const std::string& name, const std::string& version);
  //! Makes the version before the current one current again (it drops the current from the history). kConflict when
  //! there is no earlier version.
  Result<ScriptSummary> Rollback(const std::string& name);

 private:
  Result<std::vector<std::string>> ReadHistory(const std::string& name);
  Status WritePointers(const std::string& name, const std::vector<std::string>& history);

  Status RunExample(const ScriptBundle& bundle);

  BlobStore& blobs_;
  const Clock& clock_;
  ExecSandboxOptions exec_;
};

//! kInvalidArgument unless `name` is 1 to 64 characters of a-z, 0-9 and '-' and does not start with '-'.
Status ValidateScriptName(const std::string& name);

//! Script files are text (stored as JSON strings) unless they are not UTF-8 (images: stored as base64).
bool IsUtf8(std::string_view text);
std::string Base64Encode(std::string_view bytes);
//! kInvalidArgument if `text` is not padded standard base64.
Result<std::string> Base64Decode(std::string_view text);

//! Checks a script's files without storing them: the checks Push makes. Returns the parsed manifest.
Result<ScriptManifest> ValidateScriptFiles(const std::map<std::string, std::string>& files);

}  // namespace imgpipe
