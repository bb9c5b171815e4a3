#include "scripts/script_manifest.hpp"

#include <toml++/toml.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>
#include <set>

namespace imgpipe {
namespace {

// Which keys each op takes besides "op". Anything else in a step's table is refused.
const std::map<std::string, std::set<std::string>, std::less<>>& OpKeys() {
  static const auto* const kKeys = new std::map<std::string, std::set<std::string>, std::less<>>{
      {"auto-orient", {}},
      {"thumbnail", {"width", "height", "fit"}},
      {"resize", {"width", "height", "fit"}},
      {"crop", {"width", "height", "mode"}},
      {"convert", {"format", "quality", "effort"}},
      {"strip", {}},
      {"blur", {"sigma"}},
      {"sharpen", {"sigma"}},
      {"grayscale", {}},
      {"phash", {}},
      {"dominant-colour", {}},
      {"sharpness", {}},
      {"lua", {"file"}},
      {"exec", {"command", "timeout", "cpu", "memory", "env", "input"}},
      {"watermark", {"text", "image", "position", "opacity", "size", "margin", "colour"}},
      {"extract-metadata", {"fields"}},
  };
  return *kKeys;
}

std::string Where(const toml::source_region& source) {
  if (source.begin.line == 0) return "step settings";
  return std::string(kScriptManifestFile) + ":" + std::to_string(source.begin.line);
}

Error Problem(const toml::node& node, const std::string& what) {
  return MakeError(ErrorKind::kInvalidArgument, Where(node.source()) + ": " + what, "invalid_script");
}

std::string JoinKnown() {
  std::string out;
  for (std::string_view op : KnownScriptOps()) out += (out.empty() ? "" : ", ") + std::string(op);
  return out;
}

Result<int> IntIn(const toml::node& node, const std::string& key, int64_t low, int64_t high) {
  const auto* value = node.as_integer();
  if (value == nullptr || value->get() < low || value->get() > high) {
    return Problem(node, "'" + key + "' must be an integer from " + std::to_string(low) + " to " +
                             std::to_string(high));
  }
  return static_cast<int>(value->get());
}

Result<std::string> OneOf(const toml::node& node, const std::string& key, const std::set<std::string>& allowed) {
  const auto* value = node.as_string();
  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
  if (value == nullptr || !allowed.contains(value->get())) {
    return Problem(node, "'" + key + "' must be one of " + list);
  }
  return value->get();
}

bool ValidName(std::string_view name) {
  return !name.empty() && name.size() <= 64 &&
         std::all_of(name.begin(), name.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
         });
}

const std::set<std::string> kFormats = {"jpeg", "png", "webp", "avif", "heif"};

// Environment variable names a step may declare: what a shell would accept, so the program sees them as written.
bool ValidEnvName(std::string_view name) {
  return !name.empty() && name.size() <= 128 && !(name[0] >= '0' && name[0] <= '9') &&
         std::all_of(name.begin(), name.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
         });
}

Result<std::vector<std::string>> Command(const toml::node& node) {
  const toml::array* array = node.as_array();
  auto bad = [&] {
    return Problem(node, "'command' must be an array of 1 to 64 strings, e.g. [\"python3\", \"labels.py\"]");
  };
  if (array == nullptr || array->empty() || array->size() > 64) return bad();
  std::vector<std::string> argv;
  for (const toml::node& item : *array) {
    const auto* text = item.as_string();
    if (text == nullptr || text->get().size() > 4096 || text->get().find('\0') != std::string::npos) return bad();
    argv.push_back(text->get());
  }
  if (argv[0].empty()) return Problem(node, "'command' names no program");
  return argv;
}

Result<std::map<std::string, std::string>> Environment(const toml::node& node) {
  const toml::table* table = node.as_table();
  if (table == nullptr) return Problem(node, "'env' must be a table like { LANG = \"C.UTF-8\" }");
  std::map<std::string, std::string> env;
  for (const auto& [key, value] : *table) {
    const std::string name(key.str());
    const auto* text = value.as_string();
    if (!ValidEnvName(name)) return Problem(value, "env name '" + name + "' is not letters, digits and '_'");
    if (text == nullptr || text->get().size() > 4096 || text->get().find('\0') != std::string::npos) {
      return Problem(value, "env '" + name + "' must be a string of at most 4096 bytes");
    }
    env[name] = text->get();
  }
  if (env.size() > 64) return Problem(node, "'env' declares more than 64 variables");
  return env;
}

Result<ScriptStep> ParseStep(const toml::node& node, const std::map<std::string, std::string>& files) {
  const toml::table* table = node.as_table();
  if (table == nullptr) return Problem(node, "a step must be a table like { op = \"thumbnail\", width = 256 }");
  ScriptStep step;
  step.line = static_cast<int>(node.source().begin.line);
  const toml::node* op = table->get("op");
  if (op == nullptr || !op->is_string()) return Problem(node, "step has no 'op' (a string naming the step)");
  step.op = op->as_string()->get();
  auto keys = OpKeys().find(step.op);
  if (keys == OpKeys().end()) {
    return Problem(*op, "step '" + step.op + "' is unknown; known steps: " + JoinKnown());
  }
  for (const auto& [key, value] : *table) {
    const std::string k(key.str());
    if (k == "op") continue;
    if (!keys->second.contains(k)) {
      return Problem(value, "step '" + step.op + "' has no setting '" + k + "'");
    }
    if (k == "width") {
      IMGPIPE_ASSIGN_OR_RETURN(step.width, IntIn(value, k, 1, 16384));
    } else if (k == "height") {
      IMGPIPE_ASSIGN_OR_RETURN(step.height, IntIn(value, k, 1, 16384));
    } else if (k == "fit") {
      IMGPIPE_ASSIGN_OR_RETURN(step.fit, OneOf(value, k, {"inside", "cover", "fill"}));
    } else if (k == "mode") {
      IMGPIPE_ASSIGN_OR_RETURN(step.mode, OneOf(value, k, {"centre", "attention", "entropy"}));
    } else if (k == "format") {
      IMGPIPE_ASSIGN_OR_RETURN(step.format, OneOf(value, k, kFormats));
    } else if (k == "quality") {
      IMGPIPE_ASSIGN_OR_RETURN(step.quality, IntIn(value, k, 1, 100));
    } else if (k == "effort") {
      IMGPIPE_ASSIGN_OR_RETURN(step.effort, IntIn(value, k, 0, 9));
    } else if (k == "sigma") {
      std::optional<double> sigma = value.value<double>();
      if (!sigma || !std::isfinite(*sigma) || *sigma < 0.1 || *sigma > 100) {
        return Problem(value, "'sigma' must be a number from 0.1 to 100");
      }
      step.sigma = *sigma;
    } else if (k == "text") {
      const auto* text = value.as_string();
      if (text == nullptr || text->get().empty() || text->get().size() > 256) {
        return Problem(value, "'text' must be a string of 1 to 256 bytes");
      }
      step.text = text->get();
    } else if (k == "image") {
      const auto* image = value.as_string();
      if (image == nullptr) return Problem(value, "'image' must name an image file of the script");
      step.image = image->get();
      if (!files.empty() && !files.contains(step.image)) {
        return Problem(value, "watermark image '" + step.image + "' is not in the script folder");
      }
    } else if (k == "position") {
      IMGPIPE_ASSIGN_OR_RETURN(step.position, OneOf(value, k, {"top-left", "top", "top-right", "left", "centre",
                                                               "right", "bottom-left", "bottom", "bottom-right"}));
    } else if (k == "opacity" || k == "size") {
      std::optional<double> number = value.value<double>();
      const double low = k == "size" ? 0.01 : 0.0;
      if (!number || !std::isfinite(*number) || *number < low || *number > 1) {
        return Problem(value, "'" + k + "' must be a number from " + (k == "size" ? "0.01" : "0") + " to 1");
      }
      (k == "size" ? step.size : step.opacity) = *number;
    } else if (k == "margin") {
      IMGPIPE_ASSIGN_OR_RETURN(step.margin, IntIn(value, k, 0, 16384));
    } else if (k == "colour") {
      const auto* colour = value.as_string();
      const bool ok = colour != nullptr && colour->get().size() == 7 && colour->get()[0] == '#' &&
                      colour->get().find_first_not_of("0123456789abcdefABCDEF", 1) == std::string::npos;
      if (!ok) return Problem(value, "'colour' must be \"#rrggbb\"");
      step.colour = colour->get();
    } else if (k == "fields") {
      const toml::array* array = value.as_array();
      if (array == nullptr || array->size() > 256) return Problem(value, "'fields' must be an array of field names");
      for (const toml::node& item : *array) {
        const auto* name = item.as_string();
        if (name == nullptr || name->get().empty() || name->get().size() > 128) {
          return Problem(item, "'fields' must hold field names like \"exif-ifd0-Make\"");
        }
        step.fields.push_back(name->get());
      }
    } else if (k == "command") {
      IMGPIPE_ASSIGN_OR_RETURN(step.command, Command(value));
    } else if (k == "timeout") {
      IMGPIPE_ASSIGN_OR_RETURN(step.timeout, IntIn(value, k, 1, 3600));
    } else if (k == "cpu") {
      IMGPIPE_ASSIGN_OR_RETURN(step.cpu, IntIn(value, k, 1, 3600));
    } else if (k == "memory") {
      IMGPIPE_ASSIGN_OR_RETURN(step.memory, IntIn(value, k, 16, 65536));
    } else if (k == "env") {
      IMGPIPE_ASSIGN_OR_RETURN(step.env, Environment(value));
    } else if (k == "input") {
      IMGPIPE_ASSIGN_OR_RETURN(step.input, OneOf(value, k, {"png", "jpeg", "tiff", "pnm"}));
    } else if (k == "file") {
      const auto* file = value.as_string();
      if (file == nullptr) return Problem(value, "'file' must be a string naming a .lua file of the script");
      step.file = file->get();
      if (!files.empty() && !files.contains(step.file)) {
        return Problem(value, "lua file '" + step.file + "' is not in the script folder");
      }
    }
  }
  if ((step.op == "thumbnail" || step.op == "resize" || step.op == "crop") && step.width == 0 && step.height == 0) {
    return Problem(node, "step '" + step.op + "' needs 'width' or 'height'");
  }
  if (step.op == "convert" && step.format.empty()) return Problem(node, "step 'convert' needs 'format'");
  if (step.op == "lua" && step.file.empty()) return Problem(node, "step 'lua' needs 'file'");
  if (step.op == "watermark" && step.text.empty() == step.image.empty()) {
    return Problem(node, "step 'watermark' needs either 'text' or 'image'");
  }
  if (step.op == "exec" && step.command.empty()) {
    return Problem(node, "step 'exec' needs 'command', e.g. [\"python3\", \"labels.py\"]");
  }
  return step;
}

Result<std::vector<ScriptStep>> ParseSteps(const toml::node& node, const std::map<std::string, std::string>& files) {
  const toml::array* array = node.as_array();
  if (array == nullptr) return Problem(node, "'steps' must be an array of tables ([[steps]] or steps = [ {...} ])");
  std::vector<ScriptStep> steps;
  for (const toml::node& item : *array) {
    IMGPIPE_ASSIGN_OR_RETURN(ScriptStep step, ParseStep(item, files));
    steps.push_back(std::move(step));
  }
  return steps;
}

Result<ScriptRendition> ParseRendition(const toml::node& node, const std::map<std::string, std::string>& files) {
  const toml::table* table = node.as_table();
  if (table == nullptr) return Problem(node, "a rendition must be a table ([[renditions]])");
  ScriptRendition r;
  r.line = static_cast<int>(node.source().begin.line);
  for (const auto& [key, value] : *table) {
    const std::string k(key.str());
    if (k == "name") {
      const auto* name = value.as_string();
      if (name == nullptr || !ValidName(name->get())) {
        return Problem(value, "rendition 'name' must be 1 to 64 characters of a-z, 0-9 and '-'");
      }
      r.name = name->get();
    } else if (k == "format") {
      IMGPIPE_ASSIGN_OR_RETURN(r.format, OneOf(value, k, kFormats));
    } else if (k == "quality") {
      IMGPIPE_ASSIGN_OR_RETURN(r.quality, IntIn(value, k, 1, 100));
    } else if (k == "effort") {
      IMGPIPE_ASSIGN_OR_RETURN(r.effort, IntIn(value, k, 0, 9));
    } else if (k == "steps") {
      IMGPIPE_ASSIGN_OR_RETURN(r.steps, ParseSteps(value, files));
    } else {
      return Problem(value, "rendition has no setting '" + k + "'; use name, format, quality, effort, steps");
    }
  }
  if (r.name.empty()) return Problem(node, "rendition has no 'name'");
  return r;
}

// toml++ 3.3 (Debian 12) reaches __builtin_unreachable (undefined behaviour) when it asks whether some non-ASCII
// characters (U+00A1..U+0499, U+2D8E..U+3187) are whitespace, which it may do wherever it meets them (found by
// fuzz_script). So toml++ only ever sees ASCII: non-ASCII text in "..." and """...""" strings becomes \uXXXX escapes
// (the same string), in comments '?', and anywhere else (bare text, '...' literal strings) it is refused with its
// line. Whatever this scan gets wrong on malformed input, its output is ASCII, which is all the safety needs.
Result<std::string> ToAsciiToml(std::string_view text) {
  enum class State { kNormal, kComment, kBasic, kLiteral, kMultiBasic, kMultiLiteral };
  State state = State::kNormal;
  int line = 1;
  std::string out;
  out.reserve(text.size());
  auto starts = [&](size_t i, std::string_view what) { return text.substr(i, what.size()) == what; };
  auto refuse = [&](const std::string& what) {
    return MakeError(ErrorKind::kInvalidArgument,
                     std::string(kScriptManifestFile) + ":" + std::to_string(line) + ": " + what, "invalid_script");
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      if (state == State::kComment) {
        out += '?';
        continue;
      }
      if (state != State::kBasic && state != State::kMultiBasic) {
        return refuse(state == State::kNormal ? "non-ASCII character outside a string or comment"
                                              : "non-ASCII character in a '...' string; use a \"...\" string");
      }
      // One UTF-8 sequence, strictly: no overlong forms, no surrogates, nothing above U+10FFFF.
      const int length = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
      if (length == 0 || c > 0xF4 || i + length > text.size()) return refuse("invalid UTF-8");
      uint32_t code = c & (0xFF >> (length + 1));
      for (int k = 1; k < length; ++k) {
        const auto next = static_cast<unsigned char>(text[i + k]);
        if ((next & 0xC0) != 0x80) return refuse("invalid UTF-8");
        code = (code << 6) | (next & 0x3F);
      }
      const uint32_t smallest = length == 2 ? 0x80 : length == 3 ? 0x800 : 0x10000;
      if (code < smallest || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return refuse("invalid UTF-8");
      char escape[16];
      std::snprintf(escape, sizeof escape, code <= 0xFFFF ? "\\u%04X" : "\\U%08X", static_cast<unsigned>(code));
      out += escape;
      i += length - 1;
      continue;
    }
    out += static_cast<char>(c);
    if (c == '\n') ++line;
    switch (state) {
      case State::kNormal:
        if (c == '#') {
          state = State::kComment;
        } else if (starts(i, R"(""")")) {
          state = State::kMultiBasic;
          out += "\"\"";
          i += 2;
        } else if (c == '"') {
          state = State::kBasic;
        } else if (starts(i, "'''")) {
          state = State::kMultiLiteral;
          out += "''";
          i += 2;
        } else if (c == '\'') {
          state = State::kLiteral;
        }
        break;
      case State::kComment:
        if (c == '\n') state = State::kNormal;
        break;
      case State::kBasic:
      case State::kMultiBasic:
        if (c == '\\' && i + 1 < text.size() && static_cast<unsigned char>(text[i + 1]) < 0x80) {
          // An escaped character is copied as it is; a newline after the backslash still counts.
          out += text[++i];
          if (text[i] == '\n') ++line;
          if (state == State::kBasic && text[i] == '\n') state = State::kNormal;
        } else if (state == State::kBasic && (c == '"' || c == '\n')) {
          state = State::kNormal;
        } else if (state == State::kMultiBasic && starts(i, R"(""")")) {
          state = State::kNormal;
          out += "\"\"";
          i += 2;
        }
        break;
      case State::kLiteral:
        if (c == '\'' || c == '\n') state = State::kNormal;
        break;
      case State::kMultiLiteral:
        if (starts(i, "'''")) {
          state = State::kNormal;
          out += "''";
          i += 2;
        }
        break;
    }
  }
  return out;
}

}  // namespace

Result<ScriptStep> MakeScriptStep(const std::string& op, const std::map<std::string, StepSetting>& settings) {
  if (op == "lua" || op == "exec") {
    return MakeError(ErrorKind::kInvalidArgument, "a " + op + " step cannot be started from Lua");
  }
  toml::table table;
  table.insert("op", op);
  for (const auto& setting : settings) {
    const std::string& key = setting.first;
    std::visit([&](const auto& v) { table.insert(key, v); }, setting.second);
  }
  return ParseStep(table, {});
}

ScriptStep DefaultEncoding(const ScriptManifest& manifest) {
  ScriptStep encoding;
  encoding.format = "jpeg";
  for (const ScriptStep& s : manifest.steps) {
    if (s.op == "convert") encoding = s;
  }
  return encoding;
}

bool IsRenditionFormat(std::string_view format) { return kFormats.contains(std::string(format)); }

std::string RenditionFormatList() {
  std::string list;
  for (const auto& f : kFormats) list += (list.empty() ? "" : ", ") + f;
  return list;
}

const std::vector<std::string_view>& KnownScriptOps() {
  static const auto* const kOps = [] {
    auto* ops = new std::vector<std::string_view>;
    for (const auto& [op, keys] : OpKeys()) ops->push_back(op);
    return ops;
  }();
  return *kOps;
}

Result<ScriptManifest> ParseScriptManifest(std::string_view text, const std::map<std::string, std::string>& files) {
  IMGPIPE_ASSIGN_OR_RETURN(const std::string ascii, ToAsciiToml(text));
  toml::table root;
  try {
    root = toml::parse(ascii, kScriptManifestFile);
  } catch (const toml::parse_error& e) {
    return MakeError(ErrorKind::kInvalidArgument, Where(e.source()) + ": " + std::string(e.description()),
                     "invalid_script");
  }
  ScriptManifest manifest;
  std::set<std::string> names;
  for (const auto& [key, value] : root) {
    const std::string k(key.str());
    if (k == "description") {
      const auto* d = value.as_string();
      if (d == nullptr) return Problem(value, "'description' must be a string");
      manifest.description = d->get();
    } else if (k == "example") {
      const auto* e = value.as_string();
      if (e == nullptr || e->get().empty()) return Problem(value, "'example' must name an image file of the script");
      if (!files.empty() && !files.contains(e->get())) {
        return Problem(value, "example '" + e->get() + "' is not in the script folder");
      }
      manifest.example = e->get();
      manifest.example_line = static_cast<int>(value.source().begin.line);
    } else if (k == "steps") {
      IMGPIPE_ASSIGN_OR_RETURN(manifest.steps, ParseSteps(value, files));
    } else if (k == "renditions") {
      const toml::array* array = value.as_array();
      if (array == nullptr) return Problem(value, "'renditions' must be an array of tables ([[renditions]])");
      for (const toml::node& item : *array) {
        IMGPIPE_ASSIGN_OR_RETURN(ScriptRendition r, ParseRendition(item, files));
        if (!names.insert(r.name).second) return Problem(item, "rendition '" + r.name + "' is named twice");
        manifest.renditions.push_back(std::move(r));
      }
    } else {
      return Problem(value, "unknown key '" + k + "'; a script has description, example, [[steps]] and [[renditions]]");
    }
  }
  const ScriptStep encoding = DefaultEncoding(manifest);
  for (ScriptRendition& r : manifest.renditions) {
    if (r.format.empty()) r.format = encoding.format;
    if (r.quality == 0) r.quality = encoding.quality;
    if (r.effort < 0) r.effort = encoding.effort;
    for (const ScriptStep& s : r.steps) {
      if (s.op == "lua" || s.op == "exec" || s.op == "convert") {
        return MakeError(ErrorKind::kInvalidArgument,
                         std::string(kScriptManifestFile) + ":" + std::to_string(s.line) + ": step '" + s.op +
                             "' belongs in the main [[steps]], not in a rendition's steps",
                         "invalid_script");
      }
    }
  }
  return manifest;
}

}  // namespace imgpipe
