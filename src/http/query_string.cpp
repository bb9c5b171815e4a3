#include "http/query_string.hpp"

#include <boost/url/parse_query.hpp>

namespace imgpipe {

std::optional<std::string> QueryStringParam(std::string_view query, std::string_view name) {
  // Boost.URL 1.81's parse_query reads up to a terminating NUL past the view (ASan in fuzz_query_params): give it a
  // string that has one.
  const std::string terminated(query);
  auto params = boost::urls::parse_query(terminated);
  if (!params) return std::nullopt;
  for (auto p : *params) {
    if (p.key == name) return std::string(p.value);
  }
  return std::nullopt;
}

}  // namespace imgpipe
