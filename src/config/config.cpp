#include "config/config.hpp"

#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "core/cidr.hpp"

extern char** environ;

namespace imgpipe {

namespace {

// A config file is a page of settings; anything much larger is the wrong file, and refusing it early keeps the TOML
// parser's memory bounded.
constexpr size_t kMaxConfigFileBytes = 1 << 20;
// At most this many problems are listed in one error message; the rest are counted.
constexpr size_t kMaxListedErrors = 10;
// At most this many are collected (and given a "did you mean"), so a huge file of junk costs little.
constexpr size_t kMaxCollectedErrors = 100;

constexpr std::string_view kEnvPrefix = "IMGPIPE_";
// IMGPIPE_* variables that are not config keys: ImgpipeEnvironment() leaves them out and LoadConfig ignores them.
// IMGPIPE_TEST_* belong to the test tooling (e.g. IMGPIPE_TEST_POSTGRES_URL); "testing.*" keys are IMGPIPE_TESTING_*.
// IMGPIPE_BACKUP_PASSPHRASE seals the keyring in `imgpipe backup` (a secret, never a config key).
constexpr std::string_view kNonConfigEnv[] = {"IMGPIPE_CONFIG", "IMGPIPE_TEST", "IMGPIPE_BACKUP_PASSPHRASE"};
constexpr std::string_view kNonConfigEnvPrefix = "IMGPIPE_TEST_";

bool IsNonConfigEnv(std::string_view name) {
  return name.starts_with(kNonConfigEnvPrefix) ||
         std::find(std::begin(kNonConfigEnv), std::end(kNonConfigEnv), name) != std::end(kNonConfigEnv);
}

constexpr std::string_view kSections[] = {"server",     "admin", "storage", "database", "queue", "limits",  "retention",
                                          "audit",      "processing", "kafka",  "ingest", "encryption", "log", "testing"};
// Tables inside a section ([storage.azure]); their keys are "section.table.key".
constexpr std::string_view kSubTables[] = {"storage.azure", "storage.s3"};
constexpr std::string_view kRenditionsKey = "processing.renditions";
constexpr std::string_view kRoutesKey = "processing.routes";
constexpr std::string_view kImageFormats[] = {"jpeg", "png", "webp", "gif", "tiff", "heic", "avif", "jxl", "bmp"};

// toml++ 3.3 (Debian 12) reaches __builtin_unreachable (undefined behaviour) on some non-ASCII characters outside
// strings (found by fuzz_script), so it only ever sees ASCII here: files with other bytes are refused with their
// line, override text with them is taken as a bare string.
bool IsAscii(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string Upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

//! `text` in double quotes for a message, with control bytes escaped and long values cut.
std::string Quote(std::string_view text) {
  constexpr size_t kMaxShown = 80;
  std::string out = "\"";
  for (size_t i = 0; i < text.size() && i < kMaxShown; ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (text.size() > kMaxShown) out += "...";
  out += '"';
  return out;
}

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

//! The closest of `candidates` to `key` if it is close enough to be a typo of it.
std::optional<std::string> Nearest(std::string_view key, const std::vector<std::string>& candidates) {
  if (key.size() > 64) return std::nullopt;  // the longest key is 30 characters; 3 typos cannot make it 64
  std::optional<std::string> best;
  size_t best_distance = std::numeric_limits<size_t>::max();
  for (const auto& c : candidates) {
    size_t d = EditDistance(Lower(key), c);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  size_t allowed = std::clamp<size_t>(key.size() / 4, 1, 3);
  if (best && best_distance <= allowed) return best;
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------------------------------
// Durations and sizes

struct Unit {
  std::string_view name;
  uint64_t factor;
};

//! Parses "<digits><optional spaces><unit>" with `units` (matched case-insensitively; "" is the bare-number unit).
std::optional<uint64_t> ParseScaled(std::string_view text, std::initializer_list<Unit> units) {
  text = Trim(text);
  size_t digits = 0;
  uint64_t number = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') {
    uint64_t d = static_cast<uint64_t>(text[digits] - '0');
    if (number > (std::numeric_limits<uint64_t>::max() - d) / 10) return std::nullopt;
    number = number * 10 + d;
    ++digits;
  }
  if (digits == 0) return std::nullopt;
  std::string unit = Lower(Trim(text.substr(digits)));
  for (const Unit& u : units) {
    if (unit != u.name) continue;
    if (number != 0 && u.factor > std::numeric_limits<uint64_t>::max() / number) return std::nullopt;
    return number * u.factor;
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------------------------------
// Values from any source

std::string_view TypeName(toml::node_type type) {
  switch (type) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a number with a fraction";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::array: return "an array";
    case toml::node_type::table: return "a table";
    case toml::node_type::date:
    case toml::node_type::time:
    case toml::node_type::date_time: return "a date or time";
    default: return "nothing";
  }
}

//! The outcome of one value's parse: empty on success, else what is wrong with the value (without the key and the
//! source, which the caller adds).
using Problem = std::optional<std::string>;

//! A setting's value as it came: a TOML node from the file, or the text of an environment variable or flag.
//! Text is read as a TOML value when it parses as one (`8080`, `true`, `"quoted"`, `[1, 2]`), else as a bare string.
class Value {
 public:
  static Value FromNode(const toml::node& node) {
    Value v;
    v.node_ = &node;
    return v;
  }
  static Value FromText(std::string text) {
    Value v;
    v.text_ = std::move(text);
    v.is_text_ = true;
    // The text as a TOML value, if it is exactly one.
    if (v.text_.find_first_of("\r\n") == std::string::npos && !Trim(v.text_).empty() && IsAscii(v.text_)) {
      try {
        auto table = std::make_shared<toml::table>(toml::parse("v = " + v.text_));
        if (table->size() == 1 && table->get("v") != nullptr) {
          v.parsed_ = table;
          v.node_ = table->get("v");
        }
      } catch (const toml::parse_error&) {
        // Not TOML: a bare string such as 127.0.0.1:8080 or 50MiB.
      }
    }
    return v;
  }

  //! How to show the value in a message.
  std::string Show() const {
    if (is_text_) return Quote(text_);
    if (auto s = node_->as_string()) return Quote(s->get());
    if (auto i = node_->as_integer()) return std::to_string(i->get());
    if (auto b = node_->as_boolean()) return b->get() ? "true" : "false";
    return std::string(TypeName(node_->type()));
  }

  //! A string value; override text needs no quotes.
  Problem String(std::string* out) const {
    if (is_text_) {
      auto s = node_ != nullptr ? node_->as_string() : nullptr;
      *out = s != nullptr ? s->get() : std::string(Trim(text_));
      return std::nullopt;
    }
    if (auto s = node_->as_string()) {
      *out = s->get();
      return std::nullopt;
    }
    return Expected("a string");
  }

  Problem Integer(int64_t* out) const {
    if (node_ != nullptr) {
      if (auto i = node_->as_integer()) {
        *out = i->get();
        return std::nullopt;
      }
    }
    return Expected("an integer");
  }

  Problem Bool(bool* out) const {
    if (node_ != nullptr) {
      if (auto b = node_->as_boolean()) {
        *out = b->get();
        return std::nullopt;
      }
    }
    return Expected("true or false");
  }

  //! A list of strings: a TOML array of strings, or override text "a,b,c".
  Problem StringList(std::vector<std::string>* out) const {
    out->clear();
    if (node_ != nullptr && node_->is_array()) {
      for (const toml::node& item : *node_->as_array()) {
        auto s = item.as_string();
        if (s == nullptr) return "expected an array of strings, found " + std::string(TypeName(item.type())) + " in it";
        out->push_back(s->get());
      }
      return std::nullopt;
    }
    if (is_text_) {
      // "jpeg,png", or the same list quoted as one TOML string.
      std::string_view rest = node_ != nullptr && node_->is_string() ? node_->as_string()->get() : text_;
      while (true) {
        size_t comma = rest.find(',');
        std::string_view item = Trim(rest.substr(0, comma));
        if (!item.empty()) out->emplace_back(item);
        if (comma == std::string_view::npos) break;
        rest.remove_prefix(comma + 1);
      }
      return std::nullopt;
    }
    return Expected("an array of strings");
  }

  //! A size: an integer of bytes, or a string such as "50MiB".
  Problem ByteSize(uint64_t* out) const {
    if (node_ != nullptr && node_->is_integer()) {
      int64_t i = node_->as_integer()->get();
      if (i < 0) return Show() + " is negative; sizes are bytes, or a string such as \"50MiB\"";
      *out = static_cast<uint64_t>(i);
      return std::nullopt;
    }
    std::string text;
    if (String(&text)) return Expected("a size in bytes, or a string such as \"50MiB\"");
    auto parsed = ParseByteSize(text);
    if (!parsed.ok()) return parsed.error().message;
    *out = *parsed;
    return std::nullopt;
  }

  //! A duration: an integer of seconds, or a string such as "36h".
  Problem Duration(std::chrono::milliseconds* out) const {
    if (node_ != nullptr && node_->is_integer()) {
      int64_t i = node_->as_integer()->get();
      if (i < 0 || i > std::numeric_limits<int64_t>::max() / 1000) {
        return Show() + " is not a duration; use a number with a unit: 250ms, 30s, 15m, 36h, 7d";
      }
      *out = std::chrono::seconds(i);
      return std::nullopt;
    }
    std::string text;
    if (String(&text)) return Expected("a duration such as \"30s\"");
    auto parsed = ParseDuration(text);
    if (!parsed.ok()) return parsed.error().message;
    *out = *parsed;
    return std::nullopt;
  }

 private:
  std::string Expected(std::string_view what) const {
    if (is_text_) return Show() + " is not " + std::string(what);
    return "expected " + std::string(what) + ", found " + std::string(TypeName(node_->type())) +
           (node_->is_string() || node_->is_integer() || node_->is_boolean() ? " " + Show() : "");
  }

  const toml::node* node_ = nullptr;
  std::shared_ptr<toml::table> parsed_;  // owns node_ for override text
  std::string text_;
  bool is_text_ = false;
};

// ---------------------------------------------------------------------------------------------------------------------
// Setters shared by the key table

Problem SetInt(int* field, const Value& v, int64_t lo, int64_t hi) {
  int64_t i = 0;
  if (auto p = v.Integer(&i)) return p;
  if (i < lo || i > hi) return std::to_string(i) + " is out of range " + std::to_string(lo) + ".." + std::to_string(hi);
  *field = static_cast<int>(i);
  return std::nullopt;
}

Problem SetCidrs(std::vector<std::string>* field, const Value& v) {
  std::vector<std::string> blocks;
  if (auto p = v.StringList(&blocks)) return p;
  for (const std::string& b : blocks) {
    if (auto parsed = ParseCidr(b); !parsed.ok()) return parsed.error().message;
  }
  *field = std::move(blocks);
  return std::nullopt;
}

Problem SetCount(uint64_t* field, const Value& v, uint64_t lo) {
  int64_t i = 0;
  if (auto p = v.Integer(&i)) return p;
  if (i < 0 || static_cast<uint64_t>(i) < lo) return std::to_string(i) + " is below the minimum " + std::to_string(lo);
  *field = static_cast<uint64_t>(i);
  return std::nullopt;
}

Problem SetSize(uint64_t* field, const Value& v, uint64_t lo, uint64_t hi) {
  uint64_t size = 0;
  if (auto p = v.ByteSize(&size)) return p;
  if (size < lo || size > hi) {
    return std::to_string(size) + " bytes is out of range " + std::to_string(lo) + ".." + std::to_string(hi);
  }
  *field = size;
  return std::nullopt;
}

Problem SetDuration(std::chrono::milliseconds* field, const Value& v, std::chrono::milliseconds lo) {
  std::chrono::milliseconds d{};
  if (auto p = v.Duration(&d)) return p;
  if (d < lo) return v.Show() + " is too short; the minimum is " + std::to_string(lo.count()) + "ms";
  *field = d;
  return std::nullopt;
}

//! Whole seconds; `allow_zero` for retentions, where 0 means keep forever.
Problem SetSeconds(std::chrono::seconds* field, const Value& v, bool allow_zero) {
  std::chrono::milliseconds d{};
  if (auto p = v.Duration(&d)) return p;
  if (d.count() % 1000 != 0) return v.Show() + " is not a whole number of seconds";
  if (d.count() == 0 && !allow_zero) return "0 is not allowed here; the minimum is 1s";
  *field = std::chrono::duration_cast<std::chrono::seconds>(d);
  return std::nullopt;
}

//! A file path; no control characters.
Problem SetPath(std::string* field, const Value& v, bool allow_empty) {
  std::string s;
  if (auto p = v.String(&s)) return p;
  if (s.empty() && !allow_empty) return std::string("the path must not be empty");
  if (std::any_of(s.begin(), s.end(), [](char ch) { return static_cast<unsigned char>(ch) < 0x20; })) {
    return Quote(s) + " contains control characters";
  }
  *field = s;
  return std::nullopt;
}

std::string JoinNames(std::initializer_list<std::string_view> names) {
  std::string out;
  for (auto n : names) {
    if (!out.empty()) out += ", ";
    out += n;
  }
  return out;
}

Problem SetChoice(std::string* field, const Value& v, std::initializer_list<std::string_view> choices) {
  std::string s;
  if (auto p = v.String(&s)) return p;
  if (std::find(choices.begin(), choices.end(), s) == choices.end()) {
    return Quote(s) + " is not one of " + JoinNames(choices);
  }
  *field = s;
  return std::nullopt;
}

//! A backend name: `supported` are implemented; `planned` are known names refused with a clearer message.
Problem SetBackend(std::string* field, const Value& v, std::initializer_list<std::string_view> supported,
                   std::initializer_list<std::string_view> planned) {
  std::string s;
  if (auto p = v.String(&s)) return p;
  if (std::find(supported.begin(), supported.end(), s) != supported.end()) {
    *field = s;
    return std::nullopt;
  }
  bool later = std::find(planned.begin(), planned.end(), s) != planned.end();
  return Quote(s) + (later ? " is not supported yet" : " is not a backend") + "; supported: " + JoinNames(supported);
}

Problem SetEndpoint(std::string* field, const Value& v) {
  std::string s;
  if (auto p = v.String(&s)) return p;
  if (!s.starts_with("http://") && !s.starts_with("https://")) {
    return Quote(s) + " is not an http:// or https:// URL";
  }
  if (s.find_first_of("?#@ ") != std::string::npos) {
    return Quote(s) + ": no query, credentials or spaces in the endpoint (credentials have their own keys)";
  }
  *field = s;
  return std::nullopt;
}

//! A name of [a-z0-9] plus the separators `allowed` lists, `min`..`max` characters.
Problem SetName(std::string* field, const Value& v, size_t min, size_t max, std::string_view allowed) {
  std::string s;
  if (auto p = v.String(&s)) return p;
  bool ok = s.size() >= min && s.size() <= max;
  for (char ch : s) {
    ok = ok && ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                (ch == '-' && allowed.find('-') != std::string_view::npos) ||
                (ch == '.' && allowed.find('.') != std::string_view::npos));
  }
  if (!ok) {
    return Quote(s) + ": use " + std::to_string(min) + " to " + std::to_string(max) + " characters of " +
           std::string(allowed);
  }
  *field = s;
  return std::nullopt;
}

//! A credential: stored as given, never quoted back in a message.
Problem SetSecret(std::string* field, const Value& v) {
  std::string s;
  if (auto p = v.String(&s)) return p;
  if (std::any_of(s.begin(), s.end(), [](char ch) { return static_cast<unsigned char>(ch) <= 0x20; })) {
    return std::string("the value contains spaces or control characters (not shown: it is a secret)");
  }
  *field = s;
  return std::nullopt;
}

Problem CheckListen(const std::string& s) {
  auto bad = [&] { return Quote(s) + " is not HOST:PORT (e.g. 127.0.0.1:8080, [::1]:8080, 0.0.0.0:0)"; };
  size_t colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0) return bad();
  std::string_view host = std::string_view(s).substr(0, colon);
  std::string_view port = std::string_view(s).substr(colon + 1);
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return bad();
  }
  if (std::stoi(std::string(port)) > 65535) return Quote(s) + ": port " + std::string(port) + " is over 65535";
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return bad();
    std::string_view inner = host.substr(1, host.size() - 2);
    if (!std::all_of(inner.begin(), inner.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) ||
                                                                       c == ':' || c == '.'; })) {
      return bad();
    }
    return std::nullopt;
  }
  bool host_ok = std::all_of(host.begin(), host.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_';
  });
  if (!host_ok) return bad();
  return std::nullopt;
}

// A Kafka topic name as the broker accepts it: 1..249 of [A-Za-z0-9._-], not "." or "..".
bool IsTopicName(std::string_view s) {
  if (s.empty() || s.size() > 249 || s == "." || s == "..") return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
}

// A string without control characters (it goes into a librdkafka property or a file path).
Problem SetPlainString(std::string* field, const Value& v, bool secret = false) {
  std::string s;
  if (auto p = v.String(&s)) return p;
  if (std::any_of(s.begin(), s.end(), [](char ch) { return static_cast<unsigned char>(ch) < 0x20; })) {
    return secret ? std::string("the value contains control characters") : Quote(s) + " contains control characters";
  }
  *field = s;
  return std::nullopt;
}

// A Kafka consumer group id: plain text, not empty.
Problem SetGroupId(std::string* field, const Value& v) {
  if (auto p = SetPlainString(field, v)) return p;
  if (field->empty()) return std::string("the consumer group must not be empty");
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------------------------------
// The keys

struct KeyDef {
  std::string_view key;
  Problem (*apply)(Config&, const Value&);
};

// Every key except processing.renditions (an array of tables, handled by ApplyRenditions). Bounds are what the code
// can honour, not tuning advice.
const KeyDef kKeys[] = {
    {"server.listen",
     [](Config& c, const Value& v) -> Problem {
       std::string s;
       if (auto p = v.String(&s)) return p;
       if (auto p = CheckListen(s)) return p;
       c.listen = s;
       return std::nullopt;
     }},
    {"server.allow", [](Config& c, const Value& v) { return SetCidrs(&c.allow, v); }},
    {"server.trusted_proxies", [](Config& c, const Value& v) { return SetCidrs(&c.trusted_proxies, v); }},
    {"server.threads", [](Config& c, const Value& v) { return SetInt(&c.http_threads, v, 0, 1024); }},
    {"server.max_header_bytes",
     [](Config& c, const Value& v) { return SetSize(&c.max_header_bytes, v, 1024, 1024 * 1024); }},
    {"server.shutdown_grace",
     [](Config& c, const Value& v) { return SetDuration(&c.shutdown_grace, v, std::chrono::milliseconds(0)); }},
    {"server.request_timeout",
     [](Config& c, const Value& v) { return SetDuration(&c.request_timeout, v, std::chrono::milliseconds(1)); }},
    {"server.idle_timeout",
     [](Config& c, const Value& v) { return SetDuration(&c.idle_timeout, v, std::chrono::milliseconds(1)); }},
    {"server.header_timeout",
     [](Config& c, const Value& v) { return SetDuration(&c.header_timeout, v, std::chrono::milliseconds(1)); }},
    {"server.body_timeout",
     [](Config& c, const Value& v) { return SetDuration(&c.body_timeout, v, std::chrono::milliseconds(1)); }},
    {"server.tls_cert", [](Config& c, const Value& v) { return SetPath(&c.tls_cert, v, true); }},
    {"server.tls_key", [](Config& c, const Value& v) { return SetPath(&c.tls_key, v, true); }},
    {"server.tls_client_ca", [](Config& c, const Value& v) { return SetPath(&c.tls_client_ca, v, true); }},
    {"server.tls_client_auth",
     [](Config& c, const Value& v) { return SetChoice(&c.tls_client_auth, v, {"none", "optional", "required"}); }},
    {"admin.listen",
     [](Config& c, const Value& v) -> Problem {
       std::string s;
       if (auto p = v.String(&s)) return p;
       if (!s.empty()) {
         if (auto p = CheckListen(s)) return p;
       }
       c.admin_listen = s;
       return std::nullopt;
     }},
    {"admin.allow", [](Config& c, const Value& v) { return SetCidrs(&c.admin_allow, v); }},
    {"admin.tls_cert", [](Config& c, const Value& v) { return SetPath(&c.admin_tls_cert, v, true); }},
    {"admin.tls_key", [](Config& c, const Value& v) { return SetPath(&c.admin_tls_key, v, true); }},
    {"admin.tls_client_ca", [](Config& c, const Value& v) { return SetPath(&c.admin_tls_client_ca, v, true); }},
    {"admin.tls_client_auth",
     [](Config& c, const Value& v) {
       return SetChoice(&c.admin_tls_client_auth, v, {"none", "optional", "required"});
     }},
    {"storage.data_dir",
     [](Config& c, const Value& v) -> Problem {
       std::string s;
       if (auto p = v.String(&s)) return p;
       if (s.empty()) return std::string("the data folder must not be empty");
       if (std::any_of(s.begin(), s.end(), [](char ch) { return static_cast<unsigned char>(ch) < 0x20; })) {
         return Quote(s) + " contains control characters";
       }
       c.data_dir = s;
       return std::nullopt;
     }},
    {"storage.backend",
     [](Config& c, const Value& v) { return SetBackend(&c.blob_backend, v, {"local", "azure", "s3"}, {}); }},
    {"storage.ca_file",
     [](Config& c, const Value& v) -> Problem {
       std::string s;
       if (auto p = v.String(&s)) return p;
       if (!s.empty() && s.front() != '/') return Quote(s) + " is not an absolute path";
       c.storage_ca_file = s;
       return std::nullopt;
     }},
    {"storage.azure.endpoint", [](Config& c, const Value& v) { return SetEndpoint(&c.azure_endpoint, v); }},
    {"storage.azure.account",
     [](Config& c, const Value& v) { return SetName(&c.azure_account, v, 3, 24, "lowercase letters and digits"); }},
    {"storage.azure.key", [](Config& c, const Value& v) { return SetSecret(&c.azure_key, v); }},
    {"storage.azure.sas", [](Config& c, const Value& v) { return SetSecret(&c.azure_sas, v); }},
    {"storage.azure.container_prefix",
     [](Config& c, const Value& v) {
       return SetName(&c.azure_container_prefix, v, 0, 20, "lowercase letters, digits and '-'");
     }},
    {"storage.s3.endpoint", [](Config& c, const Value& v) { return SetEndpoint(&c.s3_endpoint, v); }},
    {"storage.s3.region",
     [](Config& c, const Value& v) { return SetName(&c.s3_region, v, 1, 40, "lowercase letters, digits and '-'"); }},
    {"storage.s3.bucket",
     [](Config& c, const Value& v) {
       return SetName(&c.s3_bucket, v, 3, 63, "lowercase letters, digits, '-' and '.'");
     }},
    {"storage.s3.access_key", [](Config& c, const Value& v) { return SetSecret(&c.s3_access_key, v); }},
    {"storage.s3.secret_key", [](Config& c, const Value& v) { return SetSecret(&c.s3_secret_key, v); }},
    {"storage.s3.addressing",
     [](Config& c, const Value& v) -> Problem {
       std::string s;
       if (auto p = v.String(&s)) return p;
       if (s != "path" && s != "virtual") return Quote(s) + " is not an addressing style; use \"path\" or \"virtual\"";
       c.s3_addressing = s;
       return std::nullopt;
     }},
    {"storage.s3.connect_host",
     [](Config& c, const Value& v) {
       return SetName(&c.s3_connect_host, v, 0, 253, "lowercase letters, digits, '-' and '.' (a name or IPv4)");
     }},
    {"storage.s3.create_only", [](Config& c, const Value& v) { return v.Bool(&c.s3_create_only); }},
    {"storage.s3.lifecycle", [](Config& c, const Value& v) { return v.Bool(&c.s3_lifecycle); }},
    {"database.backend",
     [](Config& c, const Value& v) { return SetBackend(&c.database_backend, v, {"sqlite", "postgres"}, {}); }},
    {"database.url",
     [](Config& c, const Value& v) -> Problem {
       std::string s;
       if (auto p = v.String(&s)) return p;
       // The URL may hold a password: never quoted back.
       if (std::any_of(s.begin(), s.end(), [](char ch) { return static_cast<unsigned char>(ch) < 0x20; })) {
         return std::string("the connection string contains control characters");
       }
       c.database_url = s;
       return std::nullopt;
     }},
    {"database.pool_size", [](Config& c, const Value& v) { return SetInt(&c.database_pool_size, v, 1, 1000); }},
    {"database.encrypt", [](Config& c, const Value& v) { return v.Bool(&c.database_encrypt); }},
    {"queue.backend",
     [](Config& c, const Value& v) { return SetBackend(&c.queue_backend, v, {"embedded", "kafka"}, {}); }},
    {"queue.max_attempts", [](Config& c, const Value& v) { return SetInt(&c.max_attempts, v, 1, 100); }},
    {"queue.retry_backoff",
     [](Config& c, const Value& v) { return SetDuration(&c.retry_backoff, v, std::chrono::milliseconds(0)); }},
    {"queue.lease", [](Config& c, const Value& v) { return SetDuration(&c.lease, v, std::chrono::milliseconds(1)); }},
    {"limits.max_bytes",
     [](Config& c, const Value& v) { return SetSize(&c.max_bytes, v, 1, std::numeric_limits<uint64_t>::max()); }},
    {"limits.max_pixels", [](Config& c, const Value& v) { return SetCount(&c.max_pixels, v, 1); }},
    {"limits.max_frames", [](Config& c, const Value& v) { return SetInt(&c.max_frames, v, 1, 1'000'000); }},
    {"limits.max_dimension", [](Config& c, const Value& v) { return SetInt(&c.max_dimension, v, 1, 10'000'000); }},
    {"limits.allowed_formats",
     [](Config& c, const Value& v) -> Problem {
       std::vector<std::string> names;
       if (auto p = v.StringList(&names)) return p;
       std::vector<std::string> formats;
       for (auto& n : names) {
         std::string name = Lower(n);
         if (std::find(std::begin(kImageFormats), std::end(kImageFormats), name) == std::end(kImageFormats)) {
           return Quote(n) + " is not a format imgpipe knows; choose from jpeg, png, webp, gif, tiff, heic, avif, "
                             "jxl, bmp";
         }
         if (std::find(formats.begin(), formats.end(), name) == formats.end()) formats.push_back(name);
       }
       if (formats.empty()) return std::string("the list is empty, so no upload could be accepted");
       c.allowed_formats = std::move(formats);
       return std::nullopt;
     }},
    {"limits.max_metadata_bytes",
     [](Config& c, const Value& v) { return SetSize(&c.max_metadata_bytes, v, 0, 16 * 1024 * 1024); }},
    {"limits.rate_per_key", [](Config& c, const Value& v) { return SetInt(&c.rate_per_key, v, 0, 1'000'000); }},
    {"limits.rate_per_address",
     [](Config& c, const Value& v) { return SetInt(&c.rate_per_address, v, 0, 1'000'000); }},
    {"limits.rate_burst", [](Config& c, const Value& v) { return SetInt(&c.rate_burst, v, 1, 1'000'000); }},
    {"limits.max_in_flight", [](Config& c, const Value& v) { return SetInt(&c.max_in_flight, v, 0, 1'000'000); }},
    {"limits.in_flight_wait",
     [](Config& c, const Value& v) { return SetDuration(&c.in_flight_wait, v, std::chrono::milliseconds(0)); }},
    {"limits.uploads_per_key",
     [](Config& c, const Value& v) { return SetInt(&c.uploads_per_key, v, 0, 1'000'000); }},
    {"retention.originals",
     [](Config& c, const Value& v) { return SetSeconds(&c.retention_originals, v, /*allow_zero=*/true); }},
    {"retention.renditions",
     [](Config& c, const Value& v) { return SetSeconds(&c.retention_renditions, v, /*allow_zero=*/true); }},
    {"retention.sweep_interval",
     [](Config& c, const Value& v) { return SetSeconds(&c.sweep_interval, v, /*allow_zero=*/false); }},
    {"retention.sweeper", [](Config& c, const Value& v) { return v.Bool(&c.sweeper_enabled); }},
    {"retention.lease",
     [](Config& c, const Value& v) { return SetSeconds(&c.sweeper_lease, v, /*allow_zero=*/false); }},
    {"audit.enabled", [](Config& c, const Value& v) { return v.Bool(&c.audit_enabled); }},
    {"audit.retention",
     [](Config& c, const Value& v) { return SetSeconds(&c.audit_retention, v, /*allow_zero=*/true); }},
    {"processing.workers", [](Config& c, const Value& v) { return SetInt(&c.worker_threads, v, 0, 1024); }},
    {"processing.vips_concurrency", [](Config& c, const Value& v) { return SetInt(&c.vips_concurrency, v, 1, 256); }},
    {"processing.enabled", [](Config& c, const Value& v) { return v.Bool(&c.embedded_workers); }},
    {"processing.default_script",
     [](Config& c, const Value& v) -> std::optional<std::string> {
       std::string s;
       if (auto p = v.String(&s)) return p;
       const bool ok = s.size() <= 64 && s.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") == std::string::npos &&
                       (s.empty() || s[0] != '-');
       if (!ok) return Quote(s) + " is not a script name (a-z, 0-9, '-'; empty for the built-in pipeline)";
       c.default_script = s == "default" ? "" : s;
       return std::nullopt;
     }},
    {"processing.exec_user",
     [](Config& c, const Value& v) -> std::optional<std::string> {
       std::string s;
       if (auto p = v.String(&s)) return p;
       if (s.empty() || s == "root") return Quote(s) + " cannot run exec steps; name an unprivileged user such as nobody";
       c.exec_user = s;
       return std::nullopt;
     }},
    {"processing.exec_temp_dir",
     [](Config& c, const Value& v) -> std::optional<std::string> {
       std::string s;
       if (auto p = v.String(&s)) return p;
       if (!s.empty() && s[0] != '/') return Quote(s) + " is not an absolute path (or empty for $TMPDIR, else /tmp)";
       c.exec_temp_dir = s;
       return std::nullopt;
     }},
    {"processing.exec_read_paths",
     [](Config& c, const Value& v) -> std::optional<std::string> {
       std::vector<std::string> paths;
       if (auto p = v.StringList(&paths)) return p;
       for (const std::string& path : paths) {
         if (path.empty() || path[0] != '/') return Quote(path) + " is not an absolute path";
       }
       c.exec_read_paths = std::move(paths);
       return std::nullopt;
     }},
    {"kafka.brokers",
     [](Config& c, const Value& v) -> Problem {
       std::string s;
       if (auto p = v.String(&s)) return p;
       // host:port[,host:port...]; each part must look like an address so a typo fails here, not at connect time.
       size_t start = 0;
       while (!s.empty() && start <= s.size()) {
         size_t comma = s.find(',', start);
         std::string part(Trim(std::string_view(s).substr(start, comma == std::string::npos ? std::string::npos
                                                                                                : comma - start)));
         if (auto p = CheckListen(part)) return "broker " + *p;
         if (comma == std::string::npos) break;
         start = comma + 1;
       }
       c.kafka_brokers = s;
       return std::nullopt;
     }},
    {"kafka.client_id", [](Config& c, const Value& v) { return SetPlainString(&c.kafka_client_id, v); }},
    {"kafka.security_protocol",
     [](Config& c, const Value& v) {
       return SetChoice(&c.kafka_security_protocol, v, {"plaintext", "ssl", "sasl_plaintext", "sasl_ssl"});
     }},
    {"kafka.sasl_mechanism",
     [](Config& c, const Value& v) {
       return SetChoice(&c.kafka_sasl_mechanism, v, {"", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"});
     }},
    {"kafka.sasl_username", [](Config& c, const Value& v) { return SetPlainString(&c.kafka_sasl_username, v); }},
    {"kafka.sasl_password",
     [](Config& c, const Value& v) { return SetPlainString(&c.kafka_sasl_password, v, /*secret=*/true); }},
    {"kafka.ssl_ca_location", [](Config& c, const Value& v) { return SetPlainString(&c.kafka_ssl_ca_location, v); }},
    {"kafka.ssl_certificate_location",
     [](Config& c, const Value& v) { return SetPlainString(&c.kafka_ssl_certificate_location, v); }},
    {"kafka.ssl_key_location", [](Config& c, const Value& v) { return SetPlainString(&c.kafka_ssl_key_location, v); }},
    {"kafka.jobs_topic",
     [](Config& c, const Value& v) -> Problem {
       std::string s;
       if (auto p = v.String(&s)) return p;
       // "<topic>.retry" and "<topic>.dlq" must be topic names too.
       if (!IsTopicName(s) || s.size() > 240) return Quote(s) + " is not a Kafka topic name (1-240 of A-Z a-z 0-9 . _ -)";
       c.kafka_jobs_topic = s;
       return std::nullopt;
     }},
    {"kafka.jobs_group_id", [](Config& c, const Value& v) { return SetGroupId(&c.kafka_jobs_group_id, v); }},
    {"kafka.jobs_session_timeout",
     [](Config& c, const Value& v) -> std::optional<std::string> {
       // The broker refuses sessions outside group.min/max.session.timeout.ms (6 s and 30 min by default).
       if (auto p = SetDuration(&c.kafka_jobs_session_timeout, v, std::chrono::milliseconds(1000))) return p;
       if (c.kafka_jobs_session_timeout > std::chrono::minutes(30)) return std::string("must be at most 30 minutes");
       return std::nullopt;
     }},
    {"kafka.jobs_max_in_flight",
     [](Config& c, const Value& v) { return SetInt(&c.kafka_jobs_max_in_flight, v, 0, 100000); }},
    {"kafka.jobs_group_instance_id",
     [](Config& c, const Value& v) { return SetPlainString(&c.kafka_jobs_group_instance_id, v); }},
    {"kafka.outbox_send_timeout",
     [](Config& c, const Value& v) {
       return SetDuration(&c.kafka_outbox_send_timeout, v, std::chrono::milliseconds(1000));
     }},
    {"kafka.outbox_lease",
     [](Config& c, const Value& v) { return SetDuration(&c.kafka_outbox_lease, v, std::chrono::milliseconds(1000)); }},
    {"kafka.events_topic",
     [](Config& c, const Value& v) -> Problem {
       std::string s;
       if (auto p = v.String(&s)) return p;
       if (!s.empty() && !IsTopicName(s)) return Quote(s) + " is not a Kafka topic name (1-249 of A-Z a-z 0-9 . _ -)";
       c.kafka_events_topic = s;
       return std::nullopt;
     }},
    {"ingest.topics",
     [](Config& c, const Value& v) -> Problem {
       std::vector<std::string> topics;
       if (auto p = v.StringList(&topics)) return p;
       for (const auto& t : topics) {
         if (!IsTopicName(t)) return Quote(t) + " is not a Kafka topic name (1-249 of A-Z a-z 0-9 . _ -)";
         if (t.ends_with(".dlq")) return Quote(t) + " is a dead-letter topic; imgpipe writes there, it does not read";
       }
       c.ingest_topics = std::move(topics);
       return std::nullopt;
     }},
    {"ingest.group_id", [](Config& c, const Value& v) { return SetGroupId(&c.ingest_group_id, v); }},
    {"ingest.group_instance_id",
     [](Config& c, const Value& v) { return SetPlainString(&c.ingest_group_instance_id, v); }},
    {"ingest.threads", [](Config& c, const Value& v) { return SetInt(&c.ingest_threads, v, 1, 256); }},
    {"ingest.max_in_flight", [](Config& c, const Value& v) { return SetInt(&c.ingest_max_in_flight, v, 1, 100000); }},
    {"ingest.claim_containers",
     [](Config& c, const Value& v) -> Problem {
       std::vector<std::string> names;
       if (auto p = v.StringList(&names)) return p;
       for (const auto& n : names) {
         const bool ok = n.size() >= 3 && n.size() <= 63 &&
                         n.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") == std::string::npos;
         if (!ok) return Quote(n) + " is not a container name (3-63 of a-z, 0-9, '-')";
         if (n == "renditions" || n == "scripts") return Quote(n) + " holds imgpipe's own objects; name another";
       }
       c.ingest_claim_containers = std::move(names);
       return std::nullopt;
     }},
    {"ingest.max_poll_interval",
     [](Config& c, const Value& v) {
       return SetDuration(&c.ingest_max_poll_interval, v, std::chrono::milliseconds(10000));
     }},
    {"ingest.session_timeout",
     [](Config& c, const Value& v) -> std::optional<std::string> {
       // The broker refuses sessions outside group.min/max.session.timeout.ms (6 s and 30 min by default).
       if (auto p = SetDuration(&c.ingest_session_timeout, v, std::chrono::milliseconds(1000))) return p;
       if (c.ingest_session_timeout > std::chrono::minutes(30)) return std::string("must be at most 30 minutes");
       return std::nullopt;
     }},
    {"log.level",
     [](Config& c, const Value& v) { return SetChoice(&c.log_level, v, {"debug", "info", "warn", "error"}); }},
    {"encryption.enabled", [](Config& c, const Value& v) { return v.Bool(&c.encryption_enabled); }},
    {"encryption.provider",
     [](Config& c, const Value& v) { return SetBackend(&c.encryption_provider, v, {"local", "pkcs11"}, {}); }},
    {"encryption.keyring", [](Config& c, const Value& v) { return SetPath(&c.keyring_path, v, /*allow_empty=*/true); }},
    {"encryption.key_cache_age",
     [](Config& c, const Value& v) { return SetDuration(&c.key_cache_age, v, std::chrono::milliseconds(0)); }},
    {"encryption.pkcs11_module",
     [](Config& c, const Value& v) { return SetPath(&c.pkcs11_module, v, /*allow_empty=*/true); }},
    {"encryption.pkcs11_token",
     [](Config& c, const Value& v) -> Problem {
       std::string s;
       if (auto p = v.String(&s)) return p;
       if (s.size() > 32) return Quote(s) + " is longer than a PKCS#11 token label (32 bytes)";
       c.pkcs11_token = s;
       return std::nullopt;
     }},
    {"encryption.pkcs11_pin",
     [](Config& c, const Value& v) -> Problem {
       // A secret: never quoted back in messages.
       std::string s;
       if (auto p = v.String(&s)) return std::string("the PIN must be a string");
       c.pkcs11_pin = s;
       return std::nullopt;
     }},
    {"encryption.pkcs11_key_label",
     [](Config& c, const Value& v) -> Problem {
       std::string s;
       if (auto p = v.String(&s)) return p;
       // The label is the key id in every object's header: the same rules.
       const bool ok = !s.empty() && s.size() <= 28 &&
                       s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") ==
                           std::string::npos;
       if (!ok) return Quote(s) + " is not a key label (1..28 of A-Z a-z 0-9 . _ -)";
       c.pkcs11_key_label = s;
       return std::nullopt;
     }},
    {"testing.clock_offset",
     [](Config& c, const Value& v) { return SetDuration(&c.clock_offset, v, std::chrono::milliseconds(0)); }},
    {"testing.kafka_seek_ahead",
     [](Config& c, const Value& v) { return SetInt(&c.kafka_seek_ahead, v, 0, 1000000); }},
};

const KeyDef* FindKey(std::string_view key) {
  for (const KeyDef& def : kKeys) {
    if (def.key == key) return &def;
  }
  return nullptr;
}

const std::vector<std::string>& AllKeys() {
  static const std::vector<std::string> keys = [] {
    std::vector<std::string> out;
    for (const KeyDef& def : kKeys) out.emplace_back(def.key);
    out.emplace_back(kRenditionsKey);
    out.emplace_back(kRoutesKey);
    return out;
  }();
  return keys;
}

std::string EnvName(std::string_view key) {
  std::string name = std::string(kEnvPrefix) + Upper(key);
  std::replace(name.begin(), name.end(), '.', '_');
  return name;
}

// ---------------------------------------------------------------------------------------------------------------------
// Loading

//! Collects every problem so one run of the CLI shows them all: the file's in line order, then the environment's,
//! then the flags'.
class Problems {
 public:
  //! Problems added from now on sort after all earlier phases' (0: file, 1: environment, 2: flags).
  void SetPhase(int phase) { phase_ = phase; }
  bool empty() const { return messages_.empty(); }
  //! True (and counts the problem) once enough problems are collected.
  bool Saturated() {
    if (messages_.size() < kMaxCollectedErrors) return false;
    ++dropped_;
    return true;
  }

  void Unknown(std::string_view key, const std::string& where, const std::vector<std::string>& candidates,
               bool env_form, int64_t line = 0) {
    if (Saturated()) return;
    std::string message = "unknown config key " + Quote(key) + " " + where;
    if (auto near = Nearest(key, candidates)) {
      message += " (did you mean " + (env_form ? EnvName(*near) : Quote(*near)) + "?)";
    }
    Add(std::move(message), line);
  }

  void BadValue(std::string_view key, const std::string& where, const std::string& problem, int64_t line = 0) {
    if (Saturated()) return;
    Add("bad value for " + std::string(key) + " " + where + ": " + problem, line);
  }

  Error ToError() {
    std::stable_sort(messages_.begin(), messages_.end(),
                     [](const Entry& a, const Entry& b) { return a.order < b.order; });
    std::string message;
    if (messages_.size() == 1) {
      message = messages_[0].text;
    } else {
      message = std::to_string(messages_.size() + dropped_) + " config errors: ";
      for (size_t i = 0; i < messages_.size() && i < kMaxListedErrors; ++i) {
        if (i > 0) message += "; ";
        message += messages_[i].text;
      }
      if (messages_.size() > kMaxListedErrors) message += "; ...";
    }
    return MakeError(ErrorKind::kInvalidArgument, std::move(message), "invalid_config");
  }

 private:
  struct Entry {
    std::pair<int, int64_t> order;
    std::string text;
  };
  void Add(std::string message, int64_t line) { messages_.push_back({{phase_, line}, std::move(message)}); }

  int phase_ = 0;
  std::vector<Entry> messages_;
  size_t dropped_ = 0;
};

std::string FileWhere(std::string_view file, const toml::source_region& source) {
  std::string where = "in " + std::string(file);
  if (source.begin.line > 0) where += " line " + std::to_string(source.begin.line);
  return where;
}

//! A table's entries in the order they appear in the file (toml++ keeps them sorted by name), so problems are found
//! and reported top to bottom.
std::vector<std::pair<const toml::key*, const toml::node*>> InFileOrder(const toml::table& table) {
  std::vector<std::pair<const toml::key*, const toml::node*>> entries;
  for (auto&& [k, v] : table) entries.emplace_back(&k, &v);
  std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    const auto& sa = a.first->source().begin;
    const auto& sb = b.first->source().begin;
    return std::tie(sa.line, sa.column) < std::tie(sb.line, sb.column);
  });
  return entries;
}

// Calls `each(item, item_key, table)` for every table of the [[key]] array `node` ("processing.renditions[2]" is the
// third's key); a value that is not an array is reported and false returned, an item that is not a table reported
// and skipped.
template <typename Each>
bool ForEachTable(const toml::node& node, std::string_view key, std::string_view file, Problems& problems,
                  Each&& each) {
  const toml::array* array = node.as_array();
  if (array == nullptr) {
    problems.BadValue(key, FileWhere(file, node.source()),
                      "expected [[" + std::string(key) + "]] tables, found " + std::string(TypeName(node.type())),
                      node.source().begin.line);
    return false;
  }
  for (size_t i = 0; i < array->size(); ++i) {
    const toml::node& item = *array->get(i);
    const std::string item_key = std::string(key) + "[" + std::to_string(i) + "]";
    const toml::table* table = item.as_table();
    if (table == nullptr) {
      problems.BadValue(item_key, FileWhere(file, item.source()),
                        "expected a table, found " + std::string(TypeName(item.type())));
      continue;
    }
    each(item, item_key, *table);
  }
  return true;
}

void ApplyRenditions(Config& config, const toml::node& node, std::string_view file, Problems& problems) {
  static const std::vector<std::string> kFields = {"name", "width", "height", "fit", "format", "quality"};
  std::vector<RenditionConfig> renditions;
  const bool read = ForEachTable(node, kRenditionsKey, file, problems, [&](const toml::node& item,
                                                                          const std::string& item_key,
                                                                          const toml::table& table_ref) {
    const toml::table* table = &table_ref;
    RenditionConfig r;
    bool ok = true;
    for (auto [k_ptr, v_ptr] : InFileOrder(*table)) {
      const toml::key& k = *k_ptr;
      const toml::node& v = *v_ptr;
      const std::string field = std::string(k.str());
      const std::string field_key = item_key + "." + field;
      const std::string field_where = FileWhere(file, k.source());
      Value value = Value::FromNode(v);
      Problem p;
      if (field == "name") {
        std::string name;
        p = value.String(&name);
        if (!p) {
          bool valid = !name.empty() && name.size() <= 32 && std::all_of(name.begin(), name.end(), [](char c) {
            return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
          });
          if (valid) {
            r.name = name;
          } else {
            p = Quote(name) + " is not a rendition name; use 1..32 characters of [a-z0-9-]";
          }
        }
      } else if (field == "width") {
        p = SetInt(&r.width, value, 1, 16384);
      } else if (field == "height") {
        p = SetInt(&r.height, value, 1, 16384);
      } else if (field == "fit") {
        p = SetChoice(&r.fit, value, {"inside", "cover"});
      } else if (field == "format") {
        p = SetChoice(&r.format, value, {"auto", "jpeg", "webp", "png", "avif"});
      } else if (field == "quality") {
        p = SetInt(&r.quality, value, 1, 100);
      } else {
        std::vector<std::string> candidates;
        for (auto& f : kFields) candidates.push_back(item_key + "." + f);
        problems.Unknown(field_key, field_where, candidates, false, k.source().begin.line);
        ok = false;
        continue;
      }
      if (p) {
        problems.BadValue(field_key, field_where, *p, k.source().begin.line);
        ok = false;
      }
    }
    for (std::string_view required : {"name", "width", "height"}) {
      if (!table->contains(required)) {
        problems.BadValue(item_key, FileWhere(file, item.source()), "missing \"" + std::string(required) + "\"",
                          item.source().begin.line);
        ok = false;
      }
    }
    if (!ok) return;
    for (const auto& earlier : renditions) {
      if (earlier.name == r.name) {
        problems.BadValue(item_key + ".name", FileWhere(file, item.source()),
                          "rendition name " + Quote(r.name) + " is used twice; names must be unique",
                          item.source().begin.line);
        ok = false;
      }
    }
    if (ok) renditions.push_back(std::move(r));
  });
  if (read) config.renditions = std::move(renditions);
}

bool IsScriptName(const std::string& s) {
  return !s.empty() && s.size() <= 64 && s[0] != '-' &&
         s.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") == std::string::npos;
}

void ApplyRoutes(Config& config, const toml::node& node, std::string_view file, Problems& problems) {
  static const std::vector<std::string> kFields = {"script",    "source",     "topic",      "format",  "min_bytes",
                                                   "max_bytes", "min_pixels", "max_pixels", "metadata"};
  std::vector<RouteConfig> routes;
  const bool read = ForEachTable(node, kRoutesKey, file, problems, [&](const toml::node& item,
                                                                      const std::string& item_key,
                                                                      const toml::table& table_ref) {
    const toml::table* table = &table_ref;
    RouteConfig r;
    bool ok = true;
    for (auto [k_ptr, v_ptr] : InFileOrder(*table)) {
      const toml::key& k = *k_ptr;
      const toml::node& v = *v_ptr;
      const std::string field = std::string(k.str());
      const std::string field_key = item_key + "." + field;
      Value value = Value::FromNode(v);
      Problem p;
      if (field == "script") {
        p = value.String(&r.script);
        if (!p && !IsScriptName(r.script)) {
          p = Quote(r.script) + " is not a script name (a-z, 0-9, '-'; \"default\" for the built-in pipeline)";
        }
      } else if (field == "source") {
        p = SetChoice(&r.source, value, {"upload", "kafka"});
      } else if (field == "topic") {
        p = value.String(&r.topic);
        if (!p && r.topic.empty()) p = std::string("an empty topic matches nothing; leave the key out for any");
      } else if (field == "format") {
        std::vector<std::string> names;
        if (const auto* one = v.as_string()) {
          names.push_back(one->get());  // format = "png" as well as format = ["png", "webp"]
        } else {
          p = value.StringList(&names);
        }
        for (size_t n = 0; !p && n < names.size(); ++n) {
          const std::string name = Lower(names[n]);
          if (std::find(std::begin(kImageFormats), std::end(kImageFormats), name) == std::end(kImageFormats)) {
            p = Quote(names[n]) + " is not a format imgpipe knows";
          }
          r.formats.push_back(name);
        }
      } else if (field == "min_bytes") {
        p = SetSize(&r.min_bytes, value, 0, std::numeric_limits<uint64_t>::max());
      } else if (field == "max_bytes") {
        p = SetSize(&r.max_bytes, value, 0, std::numeric_limits<uint64_t>::max());
      } else if (field == "min_pixels") {
        p = SetCount(&r.min_pixels, value, 0);
      } else if (field == "max_pixels") {
        p = SetCount(&r.max_pixels, value, 0);
      } else if (field == "metadata") {
        const toml::table* pairs = v.as_table();
        if (pairs == nullptr) {
          p = std::string("expected a table like { camera = \"front\" }");
        } else {
          for (const auto& [mk, mv] : *pairs) {
            if (const auto* text = mv.as_string()) {
              r.metadata[std::string(mk.str())] = text->get();
            } else if (const auto* number = mv.as_integer()) {
              r.metadata[std::string(mk.str())] = std::to_string(number->get());
            } else if (const auto* flag = mv.as_boolean()) {
              r.metadata[std::string(mk.str())] = flag->get() ? "true" : "false";
            } else {
              p = "metadata " + Quote(std::string(mk.str())) + " must be a string, an integer or a boolean";
            }
          }
        }
      } else {
        std::vector<std::string> candidates;
        for (auto& f : kFields) candidates.push_back(item_key + "." + f);
        problems.Unknown(field_key, FileWhere(file, k.source()), candidates, false, k.source().begin.line);
        ok = false;
        continue;
      }
      if (p) {
        problems.BadValue(field_key, FileWhere(file, k.source()), *p, k.source().begin.line);
        ok = false;
      }
    }
    if (!table->contains("script")) {
      problems.BadValue(item_key, FileWhere(file, item.source()), "missing \"script\"", item.source().begin.line);
      ok = false;
    }
    if (ok && (r.min_bytes > r.max_bytes || r.min_pixels > r.max_pixels)) {
      problems.BadValue(item_key, FileWhere(file, item.source()), "a minimum is above its maximum, so nothing matches",
                        item.source().begin.line);
      ok = false;
    }
    if (ok) routes.push_back(std::move(r));
  });
  if (read) config.routes = std::move(routes);
}

//! One "section[.table].key = value" of the file.
void ApplyFileKey(Config& config, const std::string& key, const toml::key& k, const toml::node& v,
                  std::string_view file, Problems& problems) {
  const KeyDef* def = FindKey(key);
  if (def == nullptr) {
    problems.Unknown(key, FileWhere(file, k.source()), AllKeys(), false, k.source().begin.line);
  } else if (Problem p = def->apply(config, Value::FromNode(v))) {
    problems.BadValue(key, FileWhere(file, k.source()), *p, k.source().begin.line);
  }
}

void ApplyFile(Config& config, const toml::table& root, std::string_view file, Problems& problems) {
  for (auto [section_key_ptr, section_node_ptr] : InFileOrder(root)) {
    const toml::key& section_key = *section_key_ptr;
    const toml::node& section_node = *section_node_ptr;
    const std::string section = std::string(section_key.str());
    const bool known = std::find(std::begin(kSections), std::end(kSections), section) != std::end(kSections);
    const toml::table* table = section_node.as_table();
    if (!known) {
      if (table == nullptr || table->empty()) {
        problems.Unknown(section, FileWhere(file, section_key.source()), AllKeys(), false,
                         section_key.source().begin.line);
      } else {
        // Name the keys inside, so a misspelt section still gets a useful "did you mean".
        for (auto [k_ptr, unused] : InFileOrder(*table)) {
          const toml::key& k = *k_ptr;
          problems.Unknown(section + "." + std::string(k.str()), FileWhere(file, k.source()), AllKeys(), false,
                           k.source().begin.line);
        }
      }
      continue;
    }
    if (table == nullptr) {
      problems.BadValue(section, FileWhere(file, section_key.source()),
                        "expected a [" + section + "] table, found " + std::string(TypeName(section_node.type())),
                        section_key.source().begin.line);
      continue;
    }
    for (auto [k_ptr, v_ptr] : InFileOrder(*table)) {
      const toml::key& k = *k_ptr;
      const toml::node& v = *v_ptr;
      const std::string key = section + "." + std::string(k.str());
      if (key == kRenditionsKey) {
        ApplyRenditions(config, v, file, problems);
        continue;
      }
      if (key == kRoutesKey) {
        ApplyRoutes(config, v, file, problems);
        continue;
      }
      if (std::find(std::begin(kSubTables), std::end(kSubTables), key) != std::end(kSubTables)) {
        const toml::table* sub = v.as_table();
        if (sub == nullptr) {
          problems.BadValue(key, FileWhere(file, k.source()), "expected a [" + key + "] table", k.source().begin.line);
          continue;
        }
        for (auto [sk_ptr, sv_ptr] : InFileOrder(*sub)) {
          ApplyFileKey(config, key + "." + std::string(sk_ptr->str()), *sk_ptr, *sv_ptr, file, problems);
        }
        continue;
      }
      ApplyFileKey(config, key, k, v, file, problems);
    }
  }
}

void ApplyOverride(Config& config, std::string_view key, const std::string& text, const std::string& where,
                   bool env_form, Problems& problems) {
  if (key == kRenditionsKey) {
    problems.BadValue(key, where, "renditions can be set only in the config file, as [[processing.renditions]] tables");
    return;
  }
  if (key == kRoutesKey) {
    problems.BadValue(key, where, "routes can be set only in the config file, as [[processing.routes]] tables");
    return;
  }
  const KeyDef* def = FindKey(key);
  if (def == nullptr) {
    problems.Unknown(key, where, AllKeys(), env_form);
    return;
  }
  if (Problem p = def->apply(config, Value::FromText(text))) problems.BadValue(key, where, *p);
}

void ApplyEnvironment(Config& config, const std::map<std::string, std::string>& env, Problems& problems) {
  for (const auto& [name, text] : env) {
    if (!std::string_view(name).starts_with(kEnvPrefix)) continue;
    if (IsNonConfigEnv(name)) continue;
    // IMGPIPE_LIMITS_MAX_BYTES -> limits.max_bytes: section names have no '_', so the first one ends the section.
    std::string key = Lower(std::string_view(name).substr(kEnvPrefix.size()));
    if (size_t underscore = key.find('_'); underscore != std::string::npos) key[underscore] = '.';
    // Sub-tables ([storage.azure], [storage.s3]) are one more level: their name ends at the next '_'.
    for (std::string_view sub : kSubTables) {
      if (key.size() > sub.size() && key.starts_with(sub) && key[sub.size()] == '_') key[sub.size()] = '.';
    }
    ApplyOverride(config, key, text, "from " + name, /*env_form=*/true, problems);
  }
}

void ApplyFlags(Config& config, const std::map<std::string, std::string>& flags, Problems& problems) {
  for (const auto& [key, text] : flags) {
    ApplyOverride(config, key, text, "from flag --" + key, /*env_form=*/false, problems);
  }
}

//! The chosen cloud backend has what it needs to start.
void CheckStorageBackend(const Config& c, Problems& problems) {
  auto missing = [&](std::string_view key, std::string hint) {
    problems.BadValue(key, "(required with storage.backend = \"" + c.blob_backend + "\")", "missing; " + hint);
  };
  if (c.blob_backend == "azure") {
    if (c.azure_endpoint.empty()) {
      missing("storage.azure.endpoint", "e.g. https://myaccount.blob.core.windows.net (IMGPIPE_STORAGE_AZURE_ENDPOINT)");
    }
    if (c.azure_account.empty()) missing("storage.azure.account", "the storage account name");
    if (c.azure_key.empty() && c.azure_sas.empty()) {
      missing("storage.azure.key", "set the account key or storage.azure.sas, preferably through the environment "
                                   "(IMGPIPE_STORAGE_AZURE_KEY / IMGPIPE_STORAGE_AZURE_SAS)");
    }
  }
  // Fail closed: an operator who asked for the store's own expiry must not believe it is there.
  if (c.s3_lifecycle && c.blob_backend != "s3") {
    problems.BadValue("storage.s3.lifecycle", "(with storage.backend = \"" + c.blob_backend + "\")",
                      c.blob_backend == "azure"
                          ? "imgpipe installs lifecycle rules on S3 only; on Azure, set a lifecycle management policy "
                            "on the storage account instead (docs/OPERATIONS.md, \"The lifecycle rule\") and "
                            "remove this key"
                          : "applies to storage.backend = \"s3\" only; remove it");
  }
  if (c.blob_backend == "s3") {
    if (c.s3_endpoint.empty()) {
      missing("storage.s3.endpoint", "e.g. https://s3.eu-west-1.amazonaws.com (IMGPIPE_STORAGE_S3_ENDPOINT)");
    }
    if (c.s3_bucket.empty()) missing("storage.s3.bucket", "the bucket imgpipe keeps its objects in");
    if (c.s3_access_key.empty() || c.s3_secret_key.empty()) {
      missing("storage.s3.secret_key", "set storage.s3.access_key and storage.s3.secret_key, preferably through the "
                                       "environment (IMGPIPE_STORAGE_S3_ACCESS_KEY / IMGPIPE_STORAGE_S3_SECRET_KEY)");
    }
  }
}

//! The TLS keys of one listener (`prefix` = "server" or "admin") fit together.
void CheckTls(std::string_view prefix, const std::string& cert, const std::string& key, const std::string& client_ca,
              const std::string& client_auth, Problems& problems) {
  const std::string p(prefix);
  if (cert.empty() != key.empty()) {
    problems.BadValue(p + (cert.empty() ? ".tls_cert" : ".tls_key"), "(with " + p + (cert.empty() ? ".tls_key" : ".tls_cert") + ")",
                      "missing; TLS needs both the certificate and its private key");
  }
  if (cert.empty() && (!client_ca.empty() || client_auth != "none")) {
    problems.BadValue(p + ".tls_cert", "(required with " + p + ".tls_client_ca / " + p + ".tls_client_auth)",
                      "missing; client certificates need TLS on the listener");
  } else if (client_auth != "none" && client_ca.empty()) {
    problems.BadValue(p + ".tls_client_ca", "(required with " + p + ".tls_client_auth = \"" + client_auth + "\")",
                      "missing; the PEM file of the CA that signs the client certificates");
  } else if (client_auth == "none" && !client_ca.empty()) {
    problems.BadValue(p + ".tls_client_auth", "(with " + p + ".tls_client_ca set)",
                      "is \"none\", so the CA would be unused; set \"required\" or \"optional\"");
  }
}

//! The two listeners' settings fit together.
void CheckListeners(const Config& c, Problems& problems) {
  CheckTls("server", c.tls_cert, c.tls_key, c.tls_client_ca, c.tls_client_auth, problems);
  CheckTls("admin", c.admin_tls_cert, c.admin_tls_key, c.admin_tls_client_ca, c.admin_tls_client_auth, problems);
  if (c.admin_listen.empty()) {
    if (!c.admin_allow.empty() || !c.admin_tls_cert.empty()) {
      problems.BadValue("admin.listen", "(required with admin.allow / admin.tls_*)",
                        "missing; set the private listener's HOST:PORT, e.g. 10.0.0.5:9443, or remove the admin keys");
    }
  } else if (c.admin_listen == c.listen && !c.listen.ends_with(":0")) {
    problems.BadValue("admin.listen", "(with server.listen)", "is the same address as server.listen; use another port");
  }
}

Result<Config> Load(const std::string_view* toml_text, std::string_view source_name, const ConfigSources& sources) {
  Config config;
  Problems problems;
  toml::table root;
  if (toml_text != nullptr) {
    if (toml_text->size() > kMaxConfigFileBytes) {
      return MakeError(ErrorKind::kInvalidArgument,
                       "config file " + std::string(source_name) + " is " + std::to_string(toml_text->size()) +
                           " bytes; the limit is 1 MiB; is it the right file?",
                       "invalid_config");
    }
    if (!IsAscii(*toml_text)) {
      size_t at = 0;
      while (static_cast<unsigned char>((*toml_text)[at]) < 0x80) ++at;
      int line = 1 + static_cast<int>(std::count(toml_text->begin(), toml_text->begin() + at, '\n'));
      return MakeError(ErrorKind::kInvalidArgument,
                       "config file " + std::string(source_name) + " line " + std::to_string(line) +
                           ": non-ASCII character; write it as a \\uXXXX escape inside a \"...\" string",
                       "invalid_config");
    }
    try {
      root = toml::parse(*toml_text, source_name);
    } catch (const toml::parse_error& e) {
      return MakeError(ErrorKind::kInvalidArgument,
                       "config file " + std::string(source_name) + " line " + std::to_string(e.source().begin.line) +
                           " column " + std::to_string(e.source().begin.column) + ": " +
                           std::string(e.description()),
                       "invalid_config");
    }
    ApplyFile(config, root, source_name, problems);
  }
  problems.SetPhase(1);
  ApplyEnvironment(config, sources.env, problems);
  problems.SetPhase(2);
  ApplyFlags(config, sources.flags, problems);
  if (problems.empty() && config.database_backend == "postgres" && config.database_url.empty()) {
    problems.BadValue("database.url", "(required with database.backend = \"postgres\")",
                      "missing; set the PostgreSQL connection string, e.g. "
                      "postgresql://imgpipe@db.internal:5432/imgpipe (or IMGPIPE_DATABASE_URL)");
  }
  if (problems.empty()) CheckStorageBackend(config, problems);
  if (problems.empty()) CheckListeners(config, problems);
  if (problems.empty() && !config.ingest_topics.empty() && config.kafka_brokers.empty()) {
    problems.BadValue("kafka.brokers", "(required with ingest.topics)",
                      "missing; set the Kafka bootstrap servers, e.g. kafka-1:9092,kafka-2:9092 "
                      "(or IMGPIPE_KAFKA_BROKERS)");
  }
  if (problems.empty() && config.queue_backend == "kafka" && config.kafka_brokers.empty()) {
    problems.BadValue("kafka.brokers", "(required with queue.backend = \"kafka\")",
                      "missing; set the Kafka bootstrap servers, e.g. kafka-1:9092,kafka-2:9092 "
                      "(or IMGPIPE_KAFKA_BROKERS)");
  }
  if (problems.empty() && config.ingest_session_timeout > config.ingest_max_poll_interval) {
    // librdkafka refuses the pair when the consumer is created; say which keys, at start-up.
    problems.BadValue("ingest.session_timeout", "(with ingest.max_poll_interval = " +
                                                    std::to_string(config.ingest_max_poll_interval.count()) + "ms)",
                      "must be at most ingest.max_poll_interval; lower it or raise the poll interval");
  }
  if (problems.empty() && config.kafka_outbox_lease <= 2 * config.kafka_outbox_send_timeout) {
    // A relay round waits up to the send timeout for its events, then as long for its jobs: a shorter lease would
    // let another gateway take rows a live relay is still sending.
    problems.BadValue("kafka.outbox_lease", "(with kafka.outbox_send_timeout = " +
                                                std::to_string(config.kafka_outbox_send_timeout.count()) + "ms)",
                      "must be more than twice kafka.outbox_send_timeout; raise the lease or lower the timeout");
  }
  if (problems.empty() && config.encryption_enabled && config.encryption_provider == "pkcs11") {
    for (const auto& [key, value] : {std::pair<const char*, const std::string*>{"encryption.pkcs11_module", &config.pkcs11_module},
                                     {"encryption.pkcs11_token", &config.pkcs11_token},
                                     {"encryption.pkcs11_pin", &config.pkcs11_pin}}) {
      if (value->empty()) {
        problems.BadValue(key, "(required with encryption.provider = \"pkcs11\")",
                          "missing; see docs/OPERATIONS.md, encryption at rest");
      }
    }
  }
  if (!problems.empty()) return problems.ToError();
  return config;
}

}  // namespace

Result<std::chrono::milliseconds> ParseDuration(std::string_view text) {
  auto ms = ParseScaled(text, {{"", 1000},
                               {"ms", 1},
                               {"s", 1000},
                               {"m", 60 * 1000},
                               {"h", 3600 * 1000},
                               {"d", 24 * 3600 * 1000}});
  if (!ms || *ms > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return MakeError(ErrorKind::kInvalidArgument,
                     Quote(text) + " is not a duration; use a number with a unit: 250ms, 30s, 15m, 36h, 7d");
  }
  return std::chrono::milliseconds(static_cast<int64_t>(*ms));
}

Result<uint64_t> ParseByteSize(std::string_view text) {
  constexpr uint64_t kKi = 1024;
  auto bytes = ParseScaled(text, {{"", 1},
                                  {"b", 1},
                                  {"kb", 1000},
                                  {"mb", 1000 * 1000},
                                  {"gb", 1000 * 1000 * 1000},
                                  {"tb", 1000ull * 1000 * 1000 * 1000},
                                  {"kib", kKi},
                                  {"mib", kKi * kKi},
                                  {"gib", kKi * kKi * kKi},
                                  {"tib", kKi * kKi * kKi * kKi}});
  if (!bytes) {
    return MakeError(ErrorKind::kInvalidArgument,
                     Quote(text) + " is not a size; use bytes or a number with a unit: 200KB, 50MiB, 1GiB");
  }
  return *bytes;
}

Result<Config> LoadConfigFromString(std::string_view toml_text, std::string_view source_name,
                                    const ConfigSources& sources) {
  return Load(&toml_text, source_name, sources);
}

Result<Config> LoadConfig(const ConfigSources& sources) {
  if (sources.file_path.empty()) return Load(nullptr, {}, sources);
  std::ifstream file(sources.file_path, std::ios::binary);
  if (!file) {
    return MakeError(ErrorKind::kInvalidArgument,
                     "cannot read config file " + sources.file_path + ": " + std::strerror(errno), "invalid_config");
  }
  std::string text;
  char buf[64 * 1024];
  while (file.read(buf, sizeof buf) || file.gcount() > 0) {
    text.append(buf, static_cast<size_t>(file.gcount()));
    if (text.size() > kMaxConfigFileBytes) break;  // Load() refuses it, naming the limit
  }
  if (file.bad()) {
    return MakeError(ErrorKind::kInvalidArgument, "cannot read config file " + sources.file_path, "invalid_config");
  }
  std::string_view view = text;
  return Load(&view, sources.file_path, sources);
}

std::map<std::string, std::string> ImgpipeEnvironment() {
  std::map<std::string, std::string> out;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view entry = *e;
    if (!entry.starts_with(kEnvPrefix)) continue;
    size_t eq = entry.find('=');
    if (eq == std::string_view::npos) continue;
    std::string name(entry.substr(0, eq));
    if (IsNonConfigEnv(name)) continue;
    out[name] = std::string(entry.substr(eq + 1));
  }
  return out;
}

std::vector<std::string> ConfigKeys() { return AllKeys(); }

}  // namespace imgpipe
