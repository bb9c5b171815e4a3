#include "scripts/exec_protocol.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <cmath>

#include "scripts/script_manifest.hpp"

namespace imgpipe {
namespace {

namespace json = boost::json;

// Bounds that keep a hostile result.json cheap to check; the run's own label limits apply after these.
constexpr size_t kMaxEntries = 10'000;
constexpr size_t kMaxText = 4096;

Error Bad(const std::string& where, const std::string& what) {
  return MakeError(ErrorKind::kInvalidArgument,
                   std::string(kExecResultJson) + (where.empty() ? " " : ": " + where + " ") + what, "script_error");
}

std::string Member(const std::string& where, std::string_view key) {
  return where.empty() ? std::string(key) : where + "." + std::string(key);
}

Result<std::string> Text(const json::object& o, const std::string& where, std::string_view key, bool required) {
  const json::value* v = o.if_contains(key);
  const std::string name = Member(where, key);
  if (v == nullptr) {
    if (required) return Bad(name, "is missing");
    return std::string();
  }
  if (!v->is_string()) return Bad(name, "must be a string");
  if (v->get_string().size() > kMaxText) return Bad(name, "is longer than " + std::to_string(kMaxText) + " bytes");
  return std::string(v->get_string());
}

Result<std::string> FileName(const json::object& o, const std::string& where, std::string_view key) {
  IMGPIPE_ASSIGN_OR_RETURN(std::string name, Text(o, where, key, true));
  if (!IsPlainFileName(name)) {
    return Bad(Member(where, key),
               "must name a file of the step's folder (letters, digits, '.', '_', '-'; no '/', not starting with '.')");
  }
  return name;
}

Result<int> Int(const json::object& o, const std::string& where, std::string_view key, int low, int high,
                int absent) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr) return absent;
  const std::string name = Member(where, key);
  auto bad = [&] { return Bad(name, "must be an integer from " + std::to_string(low) + " to " + std::to_string(high)); };
  if (v->is_int64()) {
    if (v->get_int64() < low || v->get_int64() > high) return bad();
    return static_cast<int>(v->get_int64());
  }
  if (v->is_uint64()) {
    if (v->get_uint64() > static_cast<uint64_t>(high)) return bad();
    return static_cast<int>(v->get_uint64());
  }
  return bad();
}

Status OnlyKeys(const json::object& o, const std::string& where, std::initializer_list<std::string_view> keys) {
  for (const auto& [key, value] : o) {
    if (std::find(keys.begin(), keys.end(), std::string_view(key)) == keys.end()) {
      std::string list;
      for (std::string_view k : keys) list += (list.empty() ? "" : ", ") + std::string(k);
      return Bad(where, "has an unknown key '" + std::string(key).substr(0, 64) + "'; allowed: " + list);
    }
  }
  return Ok();
}

Result<const json::array*> Array(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr) return static_cast<const json::array*>(nullptr);
  if (!v->is_array()) return Bad(std::string(key), "must be an array");
  if (v->get_array().size() > kMaxEntries) {
    return Bad(std::string(key), "has more than " + std::to_string(kMaxEntries) + " entries");
  }
  return &v->get_array();
}

Result<ExecLabel> Label(const json::value& v, const std::string& where) {
  if (!v.is_object()) return Bad(where, "must be an object {\"key\": ..., \"value\": ..., \"number\": ...}");
  const json::object& o = v.get_object();
  IMGPIPE_TRY(OnlyKeys(o, where, {"key", "value", "number"}));
  ExecLabel label;
  IMGPIPE_ASSIGN_OR_RETURN(label.key, Text(o, where, "key", true));
  if (label.key.empty()) return Bad(where + ".key", "must not be empty");
  IMGPIPE_ASSIGN_OR_RETURN(label.value, Text(o, where, "value", false));
  if (const json::value* n = o.if_contains("number"); n != nullptr && !n->is_null()) {
    if (!n->is_number()) return Bad(where + ".number", "must be a finite number");
    const double number = n->to_number<double>();
    if (!std::isfinite(number)) return Bad(where + ".number", "must be a finite number");
    label.number = number;
  }
  return label;
}

Result<ExecRendition> Rendition(const json::value& v, const std::string& where) {
  if (!v.is_object()) return Bad(where, "must be an object {\"name\": ..., \"file\": ...}");
  const json::object& o = v.get_object();
  IMGPIPE_TRY(OnlyKeys(o, where, {"name", "file", "format", "quality", "effort"}));
  ExecRendition r;
  IMGPIPE_ASSIGN_OR_RETURN(r.name, Text(o, where, "name", true));
  IMGPIPE_ASSIGN_OR_RETURN(r.file, FileName(o, where, "file"));
  IMGPIPE_ASSIGN_OR_RETURN(r.format, Text(o, where, "format", false));
  if (!r.format.empty() && !IsRenditionFormat(r.format)) {
    return Bad(where + ".format", "must be one of " + RenditionFormatList());
  }
  IMGPIPE_ASSIGN_OR_RETURN(r.quality, Int(o, where, "quality", 1, 100, 0));
  IMGPIPE_ASSIGN_OR_RETURN(r.effort, Int(o, where, "effort", 0, 9, -1));
  return r;
}

}  // namespace

bool IsPlainFileName(std::string_view name) {
  return !name.empty() && name.size() <= 128 && name[0] != '.' &&
         std::all_of(name.begin(), name.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                  c == '-' || c == '.';
         });
}

Result<ExecResult> ParseExecResult(std::string_view text) {
  if (text.size() > kExecMaxResultBytes) {
    return Bad("", "is larger than " + std::to_string(kExecMaxResultBytes) + " bytes");
  }
  json::error_code ec;
  json::parse_options options;
  options.max_depth = 8;  // the protocol nests 3 deep; deeper is hostile
  json::value root = json::parse(text, ec, {}, options);
  if (ec) return Bad("", "is not valid JSON (" + ec.message() + ")");
  if (!root.is_object()) return Bad("", "must be a JSON object like {\"labels\": [...]}");
  const json::object& o = root.get_object();
  IMGPIPE_TRY(OnlyKeys(o, "", {"labels", "renditions", "image", "reject"}));
  ExecResult result;
  IMGPIPE_ASSIGN_OR_RETURN(const json::array* labels, Array(o, "labels"));
  if (labels != nullptr) {
    for (size_t i = 0; i < labels->size(); ++i) {
      IMGPIPE_ASSIGN_OR_RETURN(ExecLabel label, Label((*labels)[i], "labels[" + std::to_string(i) + "]"));
      result.labels.push_back(std::move(label));
    }
  }
  IMGPIPE_ASSIGN_OR_RETURN(const json::array* renditions, Array(o, "renditions"));
  if (renditions != nullptr) {
    for (size_t i = 0; i < renditions->size(); ++i) {
      IMGPIPE_ASSIGN_OR_RETURN(ExecRendition r, Rendition((*renditions)[i], "renditions[" + std::to_string(i) + "]"));
      result.renditions.push_back(std::move(r));
    }
  }
  if (const json::value* image = o.if_contains("image"); image != nullptr && !image->is_null()) {
    IMGPIPE_ASSIGN_OR_RETURN(std::string file, FileName(o, "", "image"));
    result.image = std::move(file);
  }
  if (const json::value* reject = o.if_contains("reject"); reject != nullptr && !reject->is_null()) {
    IMGPIPE_ASSIGN_OR_RETURN(std::string reason, Text(o, "", "reject", true));
    if (reason.empty()) return Bad("reject", "must be a non-empty reason");
    result.reject = std::move(reason);
  }
  return result;
}

}  // namespace imgpipe
