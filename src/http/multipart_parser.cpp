#include "http/multipart_parser.hpp"

#include <algorithm>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace imgpipe {

namespace {

constexpr std::string_view kCrlf = "\r\n";
constexpr std::string_view kHeaderEnd = "\r\n\r\n";
constexpr size_t kMaxBoundaryBytes = 70;  // RFC 2046 section 5.1.1

Error Malformed(std::string message) {
  return MakeError(ErrorKind::kInvalidArgument, std::move(message), "invalid_multipart");
}

char LowerAscii(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return LowerAscii(x) == LowerAscii(y); });
}

std::string_view TrimSpace(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

//! RFC 7230 token characters (header names, parameter names, unquoted values).
bool IsTokenChar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

//! "8 KiB" for whole KiB, else "N bytes".
std::string DescribeBytes(size_t n) {
  if (n >= 1024 && n % 1024 == 0) return std::to_string(n / 1024) + " KiB";
  return std::to_string(n) + " bytes";
}

//! `text` quoted for a message: printable ASCII only, cut after 64 bytes.
std::string Shown(std::string_view text) {
  std::string out = "\"";
  for (size_t i = 0; i < text.size() && i < 64; ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    out += (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') ? static_cast<char>(c) : '?';
  }
  if (text.size() > 64) out += "...";
  return out + "\"";
}

//! Parameters after the first ';' of a header value (Content-Type or Content-Disposition): name=token or
//! name="quoted \"string\"". Names are lower-cased. A malformed list gives an error message.
struct HeaderParams {
  std::string value;  // the part before the first ';', trimmed
  std::vector<std::pair<std::string, std::string>> params;
};

std::optional<std::string> ParseParams(std::string_view header, std::string_view header_name, HeaderParams* out) {
  size_t pos = 0;
  auto skip_space = [&] {
    while (pos < header.size() && (header[pos] == ' ' || header[pos] == '\t')) ++pos;
  };
  size_t semicolon = header.find(';');
  out->value = std::string(TrimSpace(header.substr(0, semicolon)));
  if (semicolon == std::string_view::npos) return std::nullopt;
  pos = semicolon + 1;
  const std::string where = std::string(header_name) + " parameters";
  while (true) {
    skip_space();
    if (pos == header.size()) return std::nullopt;
    if (header[pos] == ';') {  // empty parameter, as some clients send ("; ;")
      ++pos;
      continue;
    }
    size_t name_start = pos;
    while (pos < header.size() && IsTokenChar(header[pos])) ++pos;
    std::string name(header.substr(name_start, pos - name_start));
    if (name.empty()) return "malformed " + where + ": expected a parameter name";
    std::transform(name.begin(), name.end(), name.begin(), LowerAscii);
    skip_space();
    if (pos == header.size() || header[pos] != '=') return "malformed " + where + ": expected '=' after " + name;
    ++pos;
    skip_space();
    std::string value;
    if (pos < header.size() && header[pos] == '"') {
      ++pos;
      bool closed = false;
      while (pos < header.size()) {
        char c = header[pos++];
        if (c == '"') {
          closed = true;
          break;
        }
        if (c == '\\' && pos < header.size()) c = header[pos++];  // quoted-pair: \" and \\ stand for " and '\'
        value.push_back(c);
      }
      if (!closed) return "malformed " + where + ": unterminated quoted string in " + name;
    } else {
      size_t value_start = pos;
      while (pos < header.size() && header[pos] != ';' && header[pos] != ' ' && header[pos] != '\t') ++pos;
      value = std::string(header.substr(value_start, pos - value_start));
      if (value.empty()) return "malformed " + where + ": empty value for " + name;
    }
    for (const auto& [existing, unused] : out->params) {
      // Two parsers picking different duplicates is how smuggling starts; refuse the ambiguity.
      if (existing == name) return "malformed " + where + ": parameter " + name + " appears twice";
    }
    out->params.emplace_back(std::move(name), std::move(value));
    skip_space();
    if (pos == header.size()) return std::nullopt;
    if (header[pos] != ';') return "malformed " + where + ": expected ';' between parameters";
    ++pos;
  }
}

const std::string* FindParam(const HeaderParams& h, std::string_view name) {
  for (const auto& [n, v] : h.params) {
    if (n == name) return &v;
  }
  return nullptr;
}

}  // namespace

MultipartParser::MultipartParser(std::string boundary, MultipartHandler* handler, MultipartLimits limits)
    : delimiter_("\r\n--" + boundary), handler_(handler), limits_(limits) {
  // The first boundary line may open the body without a CRLF before it; a virtual CRLF makes it look like the rest.
  buf_ = kCrlf;
}

Status MultipartParser::Fail(Error error) {
  state_ = State::kFailed;
  error_ = error;
  buf_ = std::string();
  return error;
}

Status MultipartParser::Emit(std::string_view data) {
  if (state_ != State::kBody || data.empty()) return Ok();
  if (auto s = handler_->OnPartData(data); !s.ok()) return Fail(s.error());
  return Ok();
}

Status MultipartParser::ScanToDelimiter(std::string_view& in) {
  const std::string_view delim = delimiter_;
  // Any delimiter that is not wholly inside `in` starts within the last `keep` bytes seen.
  const size_t keep = delim.size() - 1;

  if (!buf_.empty()) {
    // A delimiter may start in the carried tail and end in `in`: look in the tail plus just enough of `in`.
    std::string joint = buf_;
    joint.append(in.substr(0, keep));
    size_t pos = joint.find(delim);
    if (pos != std::string::npos && pos < buf_.size()) {
      IMGPIPE_TRY(Emit(std::string_view(joint).substr(0, pos)));
      in.remove_prefix(pos + delim.size() - buf_.size());
      buf_.clear();
      state_ = State::kAfterBoundary;
      return Ok();
    }
    if (joint.size() < buf_.size() + keep) {
      // `in` was too short to rule out a delimiter starting in the tail: pass on what cannot be one, keep the rest.
      size_t hold = std::min(joint.size(), keep);
      IMGPIPE_TRY(Emit(std::string_view(joint).substr(0, joint.size() - hold)));
      buf_ = joint.substr(joint.size() - hold);
      in = {};
      return Ok();
    }
    IMGPIPE_TRY(Emit(buf_));
    buf_.clear();
  }

  size_t pos = in.find(delim);
  if (pos != std::string_view::npos) {
    IMGPIPE_TRY(Emit(in.substr(0, pos)));
    in.remove_prefix(pos + delim.size());
    state_ = State::kAfterBoundary;
    return Ok();
  }
  size_t hold = std::min(in.size(), keep);
  IMGPIPE_TRY(Emit(in.substr(0, in.size() - hold)));
  buf_ = std::string(in.substr(in.size() - hold));
  in = {};
  return Ok();
}

Status MultipartParser::Feed(std::string_view in) {
  while (true) {
    switch (state_) {
      case State::kFailed:
        return error_;
      case State::kDone:
        return Ok();  // the epilogue is ignored
      case State::kPreamble:
      case State::kBody: {
        if (in.empty()) return Ok();
        bool in_body = state_ == State::kBody;
        IMGPIPE_TRY(ScanToDelimiter(in));
        if (state_ == State::kAfterBoundary && in_body) {
          if (auto s = handler_->OnPartEnd(); !s.ok()) return Fail(s.error());
        }
        break;
      }
      case State::kAfterBoundary: {
        // After the boundary: optional transport padding (spaces, tabs), then CRLF, or "--" for the last one.
        while (!in.empty() && buf_.size() < 2) {
          char c = in.front();
          in.remove_prefix(1);
          if (buf_.empty() && (c == ' ' || c == '\t')) continue;
          buf_.push_back(c);
          if (buf_ != std::string_view("--").substr(0, buf_.size()) &&
              buf_ != kCrlf.substr(0, buf_.size())) {
            return Fail(Malformed("malformed boundary line: expected CRLF or \"--\" after the boundary"));
          }
        }
        if (buf_.size() < 2) return Ok();
        if (buf_ == "--") {
          buf_ = std::string();
          state_ = State::kDone;
          break;
        }
        buf_.clear();
        if (parts_ == limits_.max_parts) {
          return Fail(Malformed("multipart body has more than " + std::to_string(limits_.max_parts) + " parts"));
        }
        ++parts_;
        state_ = State::kHeaders;
        break;
      }
      case State::kHeaders: {
        if (in.empty()) return Ok();
        // The header block ends with an empty line; it may be empty itself (a part with no headers).
        const size_t cap = limits_.max_part_header_bytes + kHeaderEnd.size();
        const size_t scan_from = buf_.size() >= 3 ? buf_.size() - 3 : 0;
        const size_t take = std::min(in.size(), cap - buf_.size());
        buf_.append(in.substr(0, take));
        size_t end = std::string::npos;
        size_t block_size = 0;
        if (buf_.size() >= 2 && buf_.compare(0, 2, kCrlf) == 0) {
          end = 2;
        } else if (size_t pos = buf_.find(kHeaderEnd, scan_from); pos != std::string::npos) {
          end = pos + kHeaderEnd.size();
          block_size = pos + kCrlf.size();
        }
        if (end == std::string::npos || block_size > limits_.max_part_header_bytes) {
          in.remove_prefix(take);
          if (buf_.size() >= cap || end != std::string::npos) {
            return Fail(Malformed("part header larger than " + DescribeBytes(limits_.max_part_header_bytes)));
          }
          return Ok();
        }
        // Bytes taken past the header end belong to the body: hand them back to `in`.
        in.remove_prefix(take - (buf_.size() - end));
        std::string block = buf_.substr(0, block_size);
        buf_.clear();
        IMGPIPE_TRY(ParseHeaders(block));
        state_ = State::kBody;
        break;
      }
    }
  }
}

Status MultipartParser::Finish() {
  switch (state_) {
    case State::kFailed:
      return error_;
    case State::kDone:
      return Ok();
    case State::kPreamble:
      return Fail(Malformed("multipart body has no boundary line: the boundary " + Shown(delimiter_.substr(4)) +
                            " from Content-Type never appears"));
    default:
      return Fail(Malformed("multipart body ended before the closing boundary"));
  }
}

Status MultipartParser::ParseHeaders(std::string_view block) {
  MultipartPart part;
  bool has_disposition = false;
  bool has_type = false;
  const std::string which = "part " + std::to_string(parts_);
  // Check every line before acting on any, so the error names the first malformed line whatever its position.
  std::vector<std::pair<std::string_view, std::string_view>> headers;
  while (!block.empty()) {
    size_t eol = block.find(kCrlf);  // the block ends with CRLF, so every line has one
    std::string_view line = block.substr(0, eol);
    block.remove_prefix(eol + kCrlf.size());
    for (char c : line) {
      if (c == '\r') return Fail(Malformed("CR without LF in the headers of " + which));
      if (c == '\n') return Fail(Malformed("LF without CR in the headers of " + which));
      if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f) {
        return Fail(Malformed("control character in the headers of " + which));
      }
    }
    if (line.empty()) continue;  // cannot happen: the block ends at the first empty line
    if (line.front() == ' ' || line.front() == '\t') {
      return Fail(Malformed("folded header line in " + which + "; multipart/form-data headers are one line each"));
    }
    size_t colon = line.find(':');
    std::string_view name = line.substr(0, colon);
    if (colon == std::string_view::npos || name.empty() || !std::all_of(name.begin(), name.end(), IsTokenChar)) {
      return Fail(Malformed("malformed header line in " + which + ": " + Shown(line)));
    }
    headers.emplace_back(name, TrimSpace(line.substr(colon + 1)));
  }
  for (const auto& [name, value] : headers) {
    if (EqualsIgnoreCase(name, "content-disposition")) {
      if (has_disposition) return Fail(Malformed(which + " has two Content-Disposition headers"));
      has_disposition = true;
      HeaderParams params;
      if (auto problem = ParseParams(value, "Content-Disposition", &params)) return Fail(Malformed(*problem));
      if (!EqualsIgnoreCase(params.value, "form-data")) {
        return Fail(Malformed("Content-Disposition of " + which + " is " + Shown(params.value) +
                              ", expected form-data"));
      }
      const std::string* field = FindParam(params, "name");
      if (field == nullptr) return Fail(Malformed(which + " has no name in its Content-Disposition"));
      part.name = *field;
      if (const std::string* filename = FindParam(params, "filename")) part.filename = *filename;
    } else if (EqualsIgnoreCase(name, "content-type")) {
      if (has_type) return Fail(Malformed(which + " has two Content-Type headers"));
      has_type = true;
      part.content_type = std::string(value);
    }
    // Other headers (Content-Transfer-Encoding, ...) are deprecated for form-data and ignored.
  }
  if (!has_disposition) return Fail(Malformed(which + " has no Content-Disposition header"));
  if (auto s = handler_->OnPartBegin(part); !s.ok()) return Fail(s.error());
  return Ok();
}

Result<std::string> MultipartBoundary(std::string_view content_type) {
  HeaderParams params;
  if (auto problem = ParseParams(content_type, "Content-Type", &params)) return Malformed(*problem);
  if (!EqualsIgnoreCase(params.value, "multipart/form-data")) {
    return MakeError(ErrorKind::kInvalidArgument,
                     "Content-Type is " + Shown(params.value) + "; uploads must be multipart/form-data",
                     "invalid_multipart");
  }
  const std::string* boundary = FindParam(params, "boundary");
  if (boundary == nullptr) return Malformed("multipart/form-data Content-Type has no boundary parameter");
  auto is_bchar = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::string_view("'()+_,-./:=? ").find(c) != std::string_view::npos;
  };
  if (boundary->empty() || boundary->size() > kMaxBoundaryBytes || boundary->back() == ' ' ||
      !std::all_of(boundary->begin(), boundary->end(), is_bchar)) {
    return Malformed("invalid multipart boundary " + Shown(*boundary) +
                     ": it must be 1..70 characters of letters, digits and '()+_,-./:=? (not ending in a space)");
  }
  return *boundary;
}

}  // namespace imgpipe
