#pragma once

#include <boost/json/value.hpp>

#include <string>
#include <string_view>

#include "core/clock.hpp"
#include "core/result.hpp"
#include "scripts/exec_sandbox.hpp"
#include "storage/blob_store.hpp"

namespace imgpipe {

//! Ok if `name` is a pushed processing script; kInvalidArgument naming the choices otherwise (for ?pipeline=).
Status CheckScriptExists(BlobStore& blobs, const Clock& clock, const std::string& name);

//! POST /v1/scripts. `body` is {"name": "...", "files": {"pipeline.toml": "...", "x.lua": "..."}}. Returns the
//! pushed version as ShowScriptJson does. kInvalidArgument naming the file and line of a bad script.
//! `exec`: how exec steps run for the script's example run.
Result<boost::json::value> PushScriptJson(BlobStore& blobs, const Clock& clock, std::string_view body,
                                          const ExecSandboxOptions& exec = {});
//! GET /v1/scripts: {"scripts": [{name, version, description, versions}]}.
Result<boost::json::value> ListScriptsJson(BlobStore& blobs, const Clock& clock);
//! GET /v1/scripts/{name}: {name, version, description, versions, pushed_at, files}. kNotFound if unknown.
Result<boost::json::value> ShowScriptJson(BlobStore& blobs, const Clock& clock, const std::string& name);

}  // namespace imgpipe
