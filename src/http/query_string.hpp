#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace imgpipe {

//! The value of the first parameter called `name` in a URL query string (the part after '?', as received), or
//! nullopt when absent or when the query string is not well-formed. The value is returned as received (percent
//! escapes are not decoded). Any bytes are safe input.
std::optional<std::string> QueryStringParam(std::string_view query, std::string_view name);

}  // namespace imgpipe
