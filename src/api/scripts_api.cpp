#include "api/scripts_api.hpp"

#include <boost/json.hpp>

#include "scripts/script_store.hpp"

namespace imgpipe {
namespace {

namespace json = boost::json;

json::object SummaryJson(const ScriptSummary& s) {
  json::array versions;
  for (const std::string& v : s.history) versions.emplace_back(v);
  return json::object{{"name", s.name},
                      {"version", s.current_version},
                      {"description", s.description},
                      {"versions", std::move(versions)}};
}

}  // namespace

Status CheckScriptExists(BlobStore& blobs, const Clock& clock, const std::string& name) {
  ScriptStore store(blobs, clock);
  auto version = store.CurrentVersion(name);
  if (version.ok()) return Ok();
  if (version.error().kind == ErrorKind::kNotFound || version.error().kind == ErrorKind::kInvalidArgument) {
    return MakeError(ErrorKind::kInvalidArgument,
                     "unknown pipeline \"" + name +
                         "\"; use \"default\" or the name of a pushed processing script (GET /v1/scripts)",
                     "unknown_pipeline");
  }
  return version.error();
}

Result<json::value> PushScriptJson(BlobStore& blobs, const Clock& clock, std::string_view body,
                                   const ExecSandboxOptions& exec) {
  json::error_code ec;
  json::value v = json::parse(body, ec);
  const json::object* o = ec ? nullptr : v.if_object();
  const json::value* name = o != nullptr ? o->if_contains("name") : nullptr;
  const json::value* files = o != nullptr ? o->if_contains("files") : nullptr;
  if (name == nullptr || !name->is_string() || files == nullptr || !files->is_object()) {
    return MakeError(ErrorKind::kInvalidArgument,
                     "body must be {\"name\": \"...\", \"files\": {\"pipeline.toml\": \"...\", \"x.lua\": \"...\"}}");
  }
  std::map<std::string, std::string> texts;
  for (const auto& [path, text] : files->get_object()) {
    if (!text.is_string()) {
      return MakeError(ErrorKind::kInvalidArgument, "file \"" + std::string(path) + "\" must be a JSON string");
    }
    texts[std::string(path)] = std::string(text.get_string());
  }
  // Binary files (an example image, a watermark) travel as base64, as GET /v1/scripts/{name} shows them.
  if (const json::value* binary = o->if_contains("files_base64"); binary != nullptr) {
    if (!binary->is_object()) {
      return MakeError(ErrorKind::kInvalidArgument, "\"files_base64\" must be an object of file name -> base64");
    }
    for (const auto& [path, text] : binary->get_object()) {
      if (!text.is_string()) {
        return MakeError(ErrorKind::kInvalidArgument, "file \"" + std::string(path) + "\" must be a base64 string");
      }
      auto bytes = Base64Decode(text.get_string());
      if (!bytes.ok()) {
        return MakeError(ErrorKind::kInvalidArgument, "file \"" + std::string(path) + "\" is not valid base64");
      }
      texts[std::string(path)] = std::move(bytes).value();
    }
  }
  ScriptStore store(blobs, clock, exec);
  IMGPIPE_ASSIGN_OR_RETURN(ScriptBundle pushed, store.Push(std::string(name->get_string()), texts));
  return ShowScriptJson(blobs, clock, pushed.name);
}

Result<json::value> ListScriptsJson(BlobStore& blobs, const Clock& clock) {
  ScriptStore store(blobs, clock);
  IMGPIPE_ASSIGN_OR_RETURN(auto list, store.List());
  json::array scripts;
  for (const ScriptSummary& s : list) scripts.emplace_back(SummaryJson(s));
  return json::value(json::object{{"scripts", std::move(scripts)}});
}

Result<json::value> ShowScriptJson(BlobStore& blobs, const Clock& clock, const std::string& name) {
  ScriptStore store(blobs, clock);
  IMGPIPE_ASSIGN_OR_RETURN(ScriptSummary summary, store.Show(name));
  IMGPIPE_ASSIGN_OR_RETURN(ScriptBundle bundle, store.Get(name, summary.current_version));
  json::object out = SummaryJson(summary);
  out["pushed_at"] = bundle.pushed_at;
  json::object files;
  json::object binary;
  for (const auto& [path, text] : bundle.files) {
    if (IsUtf8(text)) {
      files[path] = text;
    } else {
      binary[path] = Base64Encode(text);
    }
  }
  out["files"] = std::move(files);
  if (!binary.empty()) out["files_base64"] = std::move(binary);
  return json::value(std::move(out));
}

}  // namespace imgpipe
