#include "scripts/script_store.hpp"

#include <openssl/evp.h>

#include <boost/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "core/ids.hpp"
#include "scripts/exec_protocol.hpp"
#include "scripts/lua_sandbox.hpp"
#include "scripts/script_runner.hpp"
#include "processing/image_probe.hpp"

namespace imgpipe {
namespace {

namespace json = boost::json;

constexpr size_t kMaxPointerBytes = 1 << 20;

std::string VersionKey(const std::string& name, const std::string& version) {
  return name + "/versions/" + version + ".json";
}
std::string CurrentKey(const std::string& name) { return name + "/current"; }
std::string HistoryKey(const std::string& name) { return name + "/history"; }

Error Invalid(std::string message) { return MakeError(ErrorKind::kInvalidArgument, std::move(message), "invalid_script"); }

bool ValidFileName(const std::string& path) { return IsPlainFileName(path); }

// The version: SHA-256 over every (path, content) pair in path order, each length-prefixed so no two different
// folders serialize alike.
std::string VersionOf(const std::map<std::string, std::string>& files) {
  std::string canonical;
  for (const auto& [path, content] : files) {
    canonical += std::to_string(path.size()) + ":" + path + std::to_string(content.size()) + ":" + content;
  }
  return Sha256Hex(canonical);
}

Result<json::value> ReadJson(BlobStore& blobs, const std::string& key, size_t max_bytes) {
  IMGPIPE_ASSIGN_OR_RETURN(std::string text, blobs.GetAll(kScripts, key, max_bytes));
  boost::system::error_code ec;
  json::value value = json::parse(text, ec);
  if (ec) return MakeError(ErrorKind::kInternal, "scripts/" + key + " is not valid JSON: " + ec.message());
  return value;
}

}  // namespace

bool IsUtf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    const size_t length = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
    if (length == 0 || c > 0xF4 || i + length > text.size()) return false;
    uint32_t code = length == 1 ? c : c & (0xFF >> (length + 1));
    for (size_t k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xC0) != 0x80) return false;
      code = (code << 6) | (next & 0x3F);
    }
    const uint32_t smallest = length == 1 ? 0 : length == 2 ? 0x80 : length == 3 ? 0x800 : 0x10000;
    if (code < smallest || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return false;
    i += length;
  }
  return true;
}

std::string Base64Encode(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

Result<std::string> Base64Decode(std::string_view text) {
  auto bad = [] { return MakeError(ErrorKind::kInvalidArgument, "a file is not valid base64", "invalid_script"); };
  if (text.size() % 4 != 0 || text.size() > (64u << 20)) return bad();
  std::string out(text.size() / 4 * 3 + 1, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  if (n < 0) return bad();
  // EVP_DecodeBlock counts the padding as zero bytes.
  size_t padding = 0;
  while (padding < 2 && padding < text.size() && text[text.size() - 1 - padding] == '=') ++padding;
  out.resize(static_cast<size_t>(n) - padding);
  return out;
}

Status ValidateScriptName(const std::string& name) {
  const bool ok = !name.empty() && name.size() <= 64 && name[0] != '-' &&
                  std::all_of(name.begin(), name.end(), [](char c) {
                    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
                  });
  if (!ok) return Invalid("script name '" + name + "' is not 1 to 64 characters of a-z, 0-9 and '-'");
  return Ok();
}

Result<ScriptManifest> ValidateScriptFiles(const std::map<std::string, std::string>& files) {
  if (files.size() > ScriptStore::kMaxFiles) {
    return Invalid("a script holds at most " + std::to_string(ScriptStore::kMaxFiles) + " files");
  }
  size_t total = 0;
  for (const auto& [path, content] : files) {
    total += content.size();
    if (!ValidFileName(path)) return Invalid(path + ": file names are letters, digits, '.', '_' and '-' (no folders)");
    if (path.starts_with("input.") || path == kExecResultJson) {
      return Invalid(path + ": this name is reserved for the exec steps' input and result files");
    }
  }
  if (total > ScriptStore::kMaxBytes) {
    return Invalid("a script holds at most " + std::to_string(ScriptStore::kMaxBytes) + " bytes of files");
  }
  auto manifest_file = files.find(std::string(kScriptManifestFile));
  if (manifest_file == files.end()) return Invalid("the script has no pipeline.toml");
  IMGPIPE_ASSIGN_OR_RETURN(ScriptManifest manifest, ParseScriptManifest(manifest_file->second, files));
  for (const auto& [path, content] : files) {
    if (path.ends_with(".lua")) IMGPIPE_TRY(CheckLuaSyntax(content, path));
  }
  return manifest;
}

Result<ScriptBundle> ScriptStore::Push(const std::string& name, const std::map<std::string, std::string>& files) {
  IMGPIPE_TRY(ValidateScriptName(name));
  IMGPIPE_ASSIGN_OR_RETURN(ScriptManifest manifest, ValidateScriptFiles(files));
  ScriptBundle bundle;
  bundle.name = name;
  bundle.version = VersionOf(files);
  bundle.files = files;
  bundle.manifest = std::move(manifest);
  if (!bundle.manifest.example.empty()) IMGPIPE_TRY(RunExample(bundle));

  auto existing = Get(name, bundle.version);
  if (existing.ok()) {
    bundle.pushed_at = existing->pushed_at;
  } else if (existing.error().kind == ErrorKind::kNotFound) {
    bundle.pushed_at = FormatRfc3339(clock_.Now());
    json::object files_json;
    json::object binary_json;
    for (const auto& [path, content] : files) {
      if (IsUtf8(content)) {
        files_json[path] = content;
      } else {
        binary_json[path] = Base64Encode(content);
      }
    }
    json::object object{{"name", name}, {"version", bundle.version}, {"pushed_at", bundle.pushed_at},
                        {"files", std::move(files_json)}};
    if (!binary_json.empty()) object["files_base64"] = std::move(binary_json);
    IMGPIPE_TRY(blobs_.Put(kScripts, VersionKey(name, bundle.version), json::serialize(object)));
  } else {
    return existing.error();
  }
  IMGPIPE_ASSIGN_OR_RETURN(std::vector<std::string> history, ReadHistory(name));
  if (history.empty() || history.back() != bundle.version) {
    history.push_back(bundle.version);
    IMGPIPE_TRY(WritePointers(name, history));
  }
  return bundle;
}

Status ScriptStore::RunExample(const ScriptBundle& bundle) {
  const std::string where = std::string(kScriptManifestFile) + ":" + std::to_string(bundle.manifest.example_line) +
                            ": the example run over '" + bundle.manifest.example + "' ";
  InitVips(1);
  // RunScript reads a file: the example goes to a private temp file, removed whatever happens.
  std::string path = (std::filesystem::temp_directory_path() / "imgpipe-example-XXXXXX").string();
  const int fd = ::mkstemp(path.data());
  if (fd < 0) return MakeError(ErrorKind::kInternal, "cannot create a temp file for the example run");
  struct Remove {
    const std::string& path;
    ~Remove() { ::unlink(path.c_str()); }
  } remove{path};
  const std::string& bytes = bundle.files.at(bundle.manifest.example);
  const bool written = ::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size());
  ::close(fd);
  if (!written) return MakeError(ErrorKind::kInternal, "cannot write the example to " + path);
  // The example must be what an upload could be: the same strict validation first (a truncated file is refused).
  if (auto valid = ValidateImageFile(path, ImageLimits{}); !valid.ok()) {
    if (valid.error().kind == ErrorKind::kUnavailable) return valid.error();
    return Invalid(where + "failed: it is not an image an upload could be: " + valid.error().message);
  }
  ScriptRunLimits limits;
  limits.exec = exec_;
  auto ran = RunScript(bundle, path, limits);
  if (!ran.ok() && ran.error().kind == ErrorKind::kUnavailable) return ran.error();
  if (!ran.ok()) {
    // Every other failure of a pushed script's own example is the script's problem, whatever kind libvips gave it.
    return Invalid(where + "failed: " + ran.error().message);
  }
  if (ran->rejected) return Invalid(where + "rejected the example: " + *ran->rejected);
  return Ok();
}

Result<std::vector<std::string>> ScriptStore::ReadHistory(const std::string& name) {
  auto value = ReadJson(blobs_, HistoryKey(name), kMaxPointerBytes);
  if (!value.ok()) {
    if (value.error().kind == ErrorKind::kNotFound) return std::vector<std::string>{};
    return value.error();
  }
  std::vector<std::string> history;
  const json::object* object = value->if_object();
  const json::value* versions = object != nullptr ? object->if_contains("versions") : nullptr;
  if (versions == nullptr || !versions->is_array()) {
    return MakeError(ErrorKind::kInternal, "scripts/" + HistoryKey(name) + " has no 'versions' array");
  }
  for (const json::value& v : versions->get_array()) {
    if (v.is_string()) history.emplace_back(v.get_string());
  }
  return history;
}

// History first, then current: a crash between them leaves a history that already names the new version, which the
// next push or rollback rewrites consistently; `current` alone decides what runs.
Status ScriptStore::WritePointers(const std::string& name, const std::vector<std::string>& history) {
  json::array versions;
  for (const std::string& v : history) versions.emplace_back(v);
  IMGPIPE_TRY(blobs_.Put(kScripts, HistoryKey(name), json::serialize(json::object{{"versions", versions}})));
  IMGPIPE_TRY(blobs_.Put(kScripts, CurrentKey(name), json::serialize(json::object{{"version", history.back()}})));
  return Ok();
}

Result<std::string> ScriptStore::CurrentVersion(const std::string& name) {
  IMGPIPE_TRY(ValidateScriptName(name));
  auto value = ReadJson(blobs_, CurrentKey(name), kMaxPointerBytes);
  if (!value.ok()) {
    if (value.error().kind == ErrorKind::kNotFound) {
      return MakeError(ErrorKind::kNotFound, "script '" + name + "' does not exist; push it first", "unknown_script");
    }
    return value.error();
  }
  const json::object* object = value->if_object();
  const json::value* version = object != nullptr ? object->if_contains("version") : nullptr;
  if (version == nullptr || !version->is_string()) {
    return MakeError(ErrorKind::kInternal, "scripts/" + CurrentKey(name) + " names no version");
  }
  return std::string(version->get_string());
}

Result<ScriptBundle> ScriptStore::Get(const std::string& name, const std::string& version) {
  IMGPIPE_TRY(ValidateScriptName(name));
  if (version.size() != 64 || version.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return Invalid("script version '" + version + "' is not a SHA-256 in hex");
  }
  auto value = ReadJson(blobs_, VersionKey(name, version), 4 * kMaxBytes);
  if (!value.ok()) {
    if (value.error().kind == ErrorKind::kNotFound) {
      return MakeError(ErrorKind::kNotFound, "script '" + name + "' has no version " + version, "unknown_script");
    }
    return value.error();
  }
  ScriptBundle bundle;
  bundle.name = name;
  bundle.version = version;
  const json::object* object = value->if_object();
  const json::value* files = object != nullptr ? object->if_contains("files") : nullptr;
  if (files == nullptr || !files->is_object()) {
    return MakeError(ErrorKind::kInternal, "scripts/" + VersionKey(name, version) + " has no 'files' object");
  }
  if (const json::value* at = object->if_contains("pushed_at"); at != nullptr && at->is_string()) {
    bundle.pushed_at = std::string(at->get_string());
  }
  for (const auto& [path, content] : files->get_object()) {
    if (content.is_string()) bundle.files[std::string(path)] = std::string(content.get_string());
  }
  if (const json::value* binary = object->if_contains("files_base64"); binary != nullptr && binary->is_object()) {
    for (const auto& [path, content] : binary->get_object()) {
      if (!content.is_string()) continue;
      IMGPIPE_ASSIGN_OR_RETURN(bundle.files[std::string(path)], Base64Decode(content.get_string()));
    }
  }
  auto manifest = ValidateScriptFiles(bundle.files);
  if (!manifest.ok()) {
    return MakeError(ErrorKind::kInternal, "stored script '" + name + "' version " + version +
                                               " no longer validates: " + manifest.error().message);
  }
  bundle.manifest = std::move(manifest).value();
  return bundle;
}

Result<ScriptSummary> ScriptStore::Show(const std::string& name) {
  ScriptSummary summary;
  summary.name = name;
  IMGPIPE_ASSIGN_OR_RETURN(summary.current_version, CurrentVersion(name));
  IMGPIPE_ASSIGN_OR_RETURN(summary.history, ReadHistory(name));
  IMGPIPE_ASSIGN_OR_RETURN(ScriptBundle bundle, Get(name, summary.current_version));
  summary.description = bundle.manifest.description;
  return summary;
}

Result<std::vector<ScriptSummary>> ScriptStore::List() {
  std::vector<ScriptSummary> out;
  std::string continuation;
  do {
    IMGPIPE_ASSIGN_OR_RETURN(ListPage page, blobs_.List(kScripts, "", continuation));
    for (const BlobInfo& info : page.items) {
      const size_t slash = info.key.find('/');
      if (slash == std::string::npos || info.key.substr(slash + 1) != "current") continue;
      IMGPIPE_ASSIGN_OR_RETURN(ScriptSummary summary, Show(info.key.substr(0, slash)));
      out.push_back(std::move(summary));
    }
    continuation = page.continuation;
  } while (!continuation.empty());
  return out;
}

Result<ScriptSummary> ScriptStore::Rollback(const std::string& name) {
  IMGPIPE_ASSIGN_OR_RETURN(std::string current, CurrentVersion(name));
  IMGPIPE_ASSIGN_OR_RETURN(std::vector<std::string> history, ReadHistory(name));
  if (history.empty() || history.back() != current) history.push_back(current);
  if (history.size() < 2) {
    return MakeError(ErrorKind::kConflict, "script '" + name + "' has no earlier version to roll back to",
                     "no_earlier_version");
  }
  history.pop_back();
  IMGPIPE_TRY(WritePointers(name, history));
  return Show(name);
}

}  // namespace imgpipe
