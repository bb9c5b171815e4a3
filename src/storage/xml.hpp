#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"

namespace imgpipe {

//! One element of a parsed XML document: its local name (prefix dropped), its text (character data directly inside
//! it, entities decoded, surrounding whitespace kept) and its child elements in order. Attributes are checked for
//! well-formedness and dropped: the storage services' answers we read carry their data in elements.
struct XmlElement {
  std::string name;
  std::string text;
  std::vector<XmlElement> children;

  //! The first child named `name`, or nullptr.
  const XmlElement* Child(std::string_view name) const;
  //! The text of the first child named `name`, or "" if there is none.
  std::string_view ChildText(std::string_view name) const;
};

//! Limits that keep a hostile document from costing more than a bounded amount of memory and time.
struct XmlLimits {
  size_t max_bytes = 16 << 20;
  size_t max_depth = 32;
  size_t max_elements = 200000;
};

//! Parses the response bodies of the Azure Blob and S3 REST APIs: an optional XML declaration, comments, processing
//! instructions, CDATA, the five predefined entities and numeric character references (UTF-8 encoded), one root
//! element. No DTDs (a "<!DOCTYPE" is refused, so no entity expansion can be smuggled in). Any other input gives
//! kInvalidArgument naming the problem and its byte offset; never crashes, never reads past `text`.
Result<XmlElement> ParseXml(std::string_view text, const XmlLimits& limits = {});

//! Escapes &, <, >, " and ' for use as element text or attribute value.
std::string XmlEscape(std::string_view text);

}  // namespace imgpipe
