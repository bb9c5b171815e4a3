#include "ingest/stream_record.hpp"

#include <boost/json.hpp>

#include <algorithm>

#include "storage/blob_store.hpp"

namespace imgpipe {

namespace {

constexpr std::string_view kPrefix = "imgpipe-";
constexpr std::string_view kMetaPrefix = "imgpipe-meta-";
constexpr size_t kMaxSourceId = 512;
constexpr size_t kMaxNameLength = 64;
// A claim check is two short strings; anything longer is not one.
constexpr size_t kMaxClaimBytes = 4096;

Error BadHeader(std::string message) {
  return MakeError(ErrorKind::kInvalidArgument, std::move(message), "bad_header");
}

Error BadClaim(std::string message) {
  return MakeError(ErrorKind::kInvalidArgument, std::move(message), "bad_claim_check");
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// A header name or value for a message: printable ASCII, cut short; never the raw bytes.
std::string Shown(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 64)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (s.size() > 64) out += "...";
  return out;
}

bool IsPrintableAscii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

// Script and metadata names: [a-z0-9_-], 1..64, not starting with '-'.
bool IsName(std::string_view s, bool allow_underscore) {
  if (s.empty() || s.size() > kMaxNameLength || s[0] == '-') return false;
  return std::all_of(s.begin(), s.end(), [&](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || (allow_underscore && c == '_');
  });
}

Result<ClaimCheck> ParseClaim(std::string_view value, const StreamRecordLimits& limits) {
  if (value.size() > kMaxClaimBytes) {
    return BadClaim("the claim check is " + std::to_string(value.size()) + " bytes; expected a JSON object "
                    "{\"container\": ..., \"key\": ...} of at most 4096 bytes");
  }
  boost::system::error_code ec;
  boost::json::value json = boost::json::parse(value, ec);
  if (ec) return BadClaim("the claim check is not JSON (" + ec.message() + ")");
  const auto* obj = json.if_object();
  if (obj == nullptr) return BadClaim("the claim check is not a JSON object");
  ClaimCheck claim;
  for (const auto& [name, field] : *obj) {
    const auto* text = field.if_string();
    if (name == "container" && text) {
      claim.container = std::string(*text);
    } else if (name == "key" && text) {
      claim.key = std::string(*text);
    } else {
      return BadClaim("the claim check has an unexpected member \"" + Shown(name) +
                      "\"; it takes exactly the strings \"container\" and \"key\"");
    }
  }
  if (claim.container.empty() || claim.key.empty()) {
    return BadClaim("the claim check needs both \"container\" and \"key\"");
  }
  if (std::find(limits.claim_containers.begin(), limits.claim_containers.end(), claim.container) ==
      limits.claim_containers.end()) {
    return BadClaim("the claim check names container \"" + Shown(claim.container) +
                    "\", which is not in ingest.claim_containers");
  }
  if (Status key_ok = ValidateBlobKey(claim.key); !key_ok.ok()) {
    return BadClaim("the claim check's key is not a blob key: " + key_ok.error().message);
  }
  return claim;
}

}  // namespace

bool IsValidUtf8(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    auto c = static_cast<unsigned char>(text[i]);
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      len = 2;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > text.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      auto cc = static_cast<unsigned char>(text[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += len;
  }
  return true;
}

Result<StreamRecord> ParseStreamRecord(const std::vector<StreamHeader>& headers, std::string_view value,
                                       const StreamRecordLimits& limits) {
  StreamRecord record;
  boost::json::object meta;
  bool claim = false;
  bool seen_type = false;
  bool seen_pipeline = false;
  for (const StreamHeader& h : headers) {
    const std::string name = Lower(h.name);
    const bool ours = name.starts_with(kPrefix);
    if (!ours && name != "content-type") continue;
    if (!h.value) return BadHeader("header " + Shown(h.name) + " has no value");
    const std::string& v = *h.value;
    if (name == "content-type") {
      if (seen_type) return BadHeader("header content-type appears twice");
      seen_type = true;
      std::string type = Lower(v.substr(0, v.find(';')));
      while (!type.empty() && type.back() == ' ') type.pop_back();
      if (type == kClaimCheckContentType || type == "application/json") {
        claim = true;
      } else if (type.starts_with("image/") && type.size() > 6 && IsPrintableAscii(type)) {
        record.content_type = type;
      } else {
        return BadHeader("content-type \"" + Shown(v) + "\" is neither an image type (image/...) nor a claim check (" +
                         std::string(kClaimCheckContentType) + ")");
      }
    } else if (name == "imgpipe-source-id") {
      if (record.source_id) return BadHeader("header imgpipe-source-id appears twice");
      if (v.empty() || v.size() > kMaxSourceId || !IsPrintableAscii(v)) {
        return BadHeader("imgpipe-source-id must be 1-512 printable ASCII characters without spaces");
      }
      record.source_id = v;
    } else if (name == "imgpipe-pipeline") {
      if (seen_pipeline) return BadHeader("header imgpipe-pipeline appears twice");
      seen_pipeline = true;
      if (!IsName(v, /*allow_underscore=*/false)) {
        return BadHeader("imgpipe-pipeline \"" + Shown(v) + "\" is not a script name (a-z, 0-9, '-')");
      }
      record.pipeline = v == "default" ? "" : v;
    } else if (name.starts_with(kMetaPrefix)) {
      std::string key = name.substr(kMetaPrefix.size());
      if (!IsName(key, /*allow_underscore=*/true)) {
        return BadHeader("header " + Shown(h.name) + ": the name after imgpipe-meta- must be 1-64 of a-z 0-9 _ -");
      }
      if (meta.contains(key)) return BadHeader("header " + Shown(h.name) + " appears twice");
      if (!IsValidUtf8(v) || v.find('\0') != std::string::npos) {
        return BadHeader("header " + Shown(h.name) + " is not UTF-8 text");
      }
      meta[key] = v;
    } else {
      return BadHeader("unknown header " + Shown(h.name) +
                       "; imgpipe reads imgpipe-source-id, imgpipe-pipeline and imgpipe-meta-<name>");
    }
  }
  if (!meta.empty()) {
    record.metadata_json = boost::json::serialize(meta);
    if (record.metadata_json.size() > limits.max_metadata_bytes) {
      return MakeError(ErrorKind::kTooLarge,
                       "the imgpipe-meta-* headers make " + std::to_string(record.metadata_json.size()) +
                           " bytes of metadata; the limit is " + std::to_string(limits.max_metadata_bytes) +
                           " (limits.max_metadata_bytes)",
                       "metadata_too_large");
    }
  }
  if (claim) {
    IMGPIPE_ASSIGN_OR_RETURN(ClaimCheck c, ParseClaim(value, limits));
    record.claim = std::move(c);
  } else if (value.empty()) {
    return MakeError(ErrorKind::kInvalidArgument, "the record has no value; send the image bytes or a claim check",
                     "empty_record");
  }
  return record;
}

}  // namespace imgpipe
