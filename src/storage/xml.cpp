#include "storage/xml.hpp"

#include <cstdint>

namespace imgpipe {

const XmlElement* XmlElement::Child(std::string_view child_name) const {
  for (const auto& c : children) {
    if (c.name == child_name) return &c;
  }
  return nullptr;
}

std::string_view XmlElement::ChildText(std::string_view child_name) const {
  const XmlElement* c = Child(child_name);
  return c ? std::string_view(c->text) : std::string_view{};
}

namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

bool IsNameChar(char c) {
  auto u = static_cast<unsigned char>(c);
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
         c == '.' || c == ':' || u >= 0x80;
}

void AppendUtf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

class Parser {
 public:
  Parser(std::string_view text, const XmlLimits& limits) : s_(text), limits_(limits) {}

  Result<XmlElement> Document() {
    if (s_.size() > limits_.max_bytes) {
      return MakeError(ErrorKind::kInvalidArgument, "XML document is " + std::to_string(s_.size()) +
                                                        " bytes, over the limit of " +
                                                        std::to_string(limits_.max_bytes));
    }
    if (s_.substr(0, 3) == "\xEF\xBB\xBF") pos_ = 3;  // UTF-8 byte order mark
    IMGPIPE_TRY(Misc());
    if (pos_ >= s_.size() || s_[pos_] != '<') return Fail("expected the root element");
    XmlElement root;
    IMGPIPE_TRY(Element(root, 1));
    IMGPIPE_TRY(Misc());
    if (pos_ != s_.size()) return Fail("unexpected content after the root element");
    return root;
  }

 private:
  Error Fail(std::string what) const {
    return MakeError(ErrorKind::kInvalidArgument, "malformed XML at byte " + std::to_string(pos_) + ": " + what);
  }

  bool StartsWith(std::string_view p) const { return s_.substr(pos_, p.size()) == p; }

  void SkipSpace() {
    while (pos_ < s_.size() && IsSpace(s_[pos_])) ++pos_;
  }

  // Whitespace, comments and processing instructions (the XML declaration among them) outside the root.
  Status Misc() {
    for (;;) {
      SkipSpace();
      if (StartsWith("<!--")) {
        IMGPIPE_TRY(SkipPast("-->", 4, "unterminated comment"));
      } else if (StartsWith("<?")) {
        IMGPIPE_TRY(SkipPast("?>", 2, "unterminated processing instruction"));
      } else if (StartsWith("<!")) {
        return Fail("DTDs and declarations are not accepted");
      } else {
        return Ok();
      }
    }
  }

  Status SkipPast(std::string_view end, size_t skip_first, const char* what) {
    size_t at = s_.find(end, pos_ + skip_first);
    if (at == std::string_view::npos) return Fail(what);
    pos_ = at + end.size();
    return Ok();
  }

  Result<std::string> Name() {
    size_t start = pos_;
    while (pos_ < s_.size() && IsNameChar(s_[pos_])) ++pos_;
    if (pos_ == start) return Fail("expected a name");
    return std::string(s_.substr(start, pos_ - start));
  }

  static std::string LocalName(std::string qname) {
    size_t colon = qname.find(':');
    return colon == std::string::npos ? qname : qname.substr(colon + 1);
  }

  // Decodes one entity or character reference starting at '&'; appends it to `out`.
  Status Reference(std::string& out) {
    size_t semi = s_.find(';', pos_);
    if (semi == std::string_view::npos || semi - pos_ > 12) return Fail("unterminated entity reference");
    std::string_view ref = s_.substr(pos_ + 1, semi - pos_ - 1);
    if (ref == "lt") {
      out += '<';
    } else if (ref == "gt") {
      out += '>';
    } else if (ref == "amp") {
      out += '&';
    } else if (ref == "quot") {
      out += '"';
    } else if (ref == "apos") {
      out += '\'';
    } else if (ref.size() >= 2 && ref[0] == '#') {
      uint32_t cp = 0;
      bool hex = ref[1] == 'x';
      std::string_view digits = ref.substr(hex ? 2 : 1);
      if (digits.empty()) return Fail("empty character reference");
      for (char c : digits) {
        uint32_t d;
        if (c >= '0' && c <= '9') {
          d = static_cast<uint32_t>(c - '0');
        } else if (hex && c >= 'a' && c <= 'f') {
          d = static_cast<uint32_t>(c - 'a' + 10);
        } else if (hex && c >= 'A' && c <= 'F') {
          d = static_cast<uint32_t>(c - 'A' + 10);
        } else {
          return Fail("bad digit in a character reference");
        }
        cp = cp * (hex ? 16 : 10) + d;
        if (cp > 0x10FFFF) return Fail("character reference out of range");
      }
      if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF)) return Fail("character reference to an invalid character");
      AppendUtf8(out, cp);
    } else {
      return Fail("unknown entity &" + std::string(ref) + ";");
    }
    pos_ = semi + 1;
    return Ok();
  }

  Status Attributes(bool* self_closing) {
    for (;;) {
      SkipSpace();
      if (pos_ >= s_.size()) return Fail("unterminated start tag");
      if (s_[pos_] == '>') {
        ++pos_;
        *self_closing = false;
        return Ok();
      }
      if (StartsWith("/>")) {
        pos_ += 2;
        *self_closing = true;
        return Ok();
      }
      IMGPIPE_TRY(Name());
      SkipSpace();
      if (pos_ >= s_.size() || s_[pos_] != '=') return Fail("expected '=' after an attribute name");
      ++pos_;
      SkipSpace();
      if (pos_ >= s_.size() || (s_[pos_] != '"' && s_[pos_] != '\'')) return Fail("expected a quoted value");
      char quote = s_[pos_++];
      size_t end = s_.find(quote, pos_);
      if (end == std::string_view::npos) return Fail("unterminated attribute value");
      if (s_.substr(pos_, end - pos_).find('<') != std::string_view::npos) return Fail("'<' in an attribute value");
      pos_ = end + 1;
    }
  }

  Status Element(XmlElement& el, size_t depth) {
    if (depth > limits_.max_depth) return Fail("nested deeper than " + std::to_string(limits_.max_depth));
    if (++elements_ > limits_.max_elements) {
      return Fail("more than " + std::to_string(limits_.max_elements) + " elements");
    }
    ++pos_;  // '<'
    IMGPIPE_ASSIGN_OR_RETURN(std::string qname, Name());
    el.name = LocalName(qname);
    bool self_closing = false;
    IMGPIPE_TRY(Attributes(&self_closing));
    if (self_closing) return Ok();
    for (;;) {
      if (pos_ >= s_.size()) return Fail("unclosed element <" + qname + ">");
      char c = s_[pos_];
      if (c == '&') {
        IMGPIPE_TRY(Reference(el.text));
      } else if (c != '<') {
        size_t next = s_.find_first_of("<&", pos_);
        if (next == std::string_view::npos) next = s_.size();
        el.text.append(s_.substr(pos_, next - pos_));
        pos_ = next;
      } else if (StartsWith("</")) {
        pos_ += 2;
        IMGPIPE_ASSIGN_OR_RETURN(std::string closing, Name());
        if (closing != qname) return Fail("</" + closing + "> closes <" + qname + ">");
        SkipSpace();
        if (pos_ >= s_.size() || s_[pos_] != '>') return Fail("expected '>'");
        ++pos_;
        return Ok();
      } else if (StartsWith("<!--")) {
        IMGPIPE_TRY(SkipPast("-->", 4, "unterminated comment"));
      } else if (StartsWith("<![CDATA[")) {
        size_t end = s_.find("]]>", pos_ + 9);
        if (end == std::string_view::npos) return Fail("unterminated CDATA section");
        el.text.append(s_.substr(pos_ + 9, end - pos_ - 9));
        pos_ = end + 3;
      } else if (StartsWith("<?")) {
        IMGPIPE_TRY(SkipPast("?>", 2, "unterminated processing instruction"));
      } else if (StartsWith("<!")) {
        return Fail("declarations are not accepted inside elements");
      } else {
        el.children.emplace_back();
        IMGPIPE_TRY(Element(el.children.back(), depth + 1));
      }
    }
  }

  std::string_view s_;
  const XmlLimits& limits_;
  size_t pos_ = 0;
  size_t elements_ = 0;
};

}  // namespace

Result<XmlElement> ParseXml(std::string_view text, const XmlLimits& limits) {
  return Parser(text, limits).Document();
}

std::string XmlEscape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out += c;
    }
  }
  return out;
}

}  // namespace imgpipe
