#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"

namespace imgpipe {

//! What routing looks at: where the image came from and what it is (known after validation, before storing).
struct RouteFacts {
  std::string_view source;         //!< "upload" | "kafka"
  std::string_view topic;          //!< the Kafka topic; empty for uploads
  std::string_view format;         //!< the detected format ("jpeg", ...)
  uint64_t bytes = 0;
  uint64_t pixels = 0;             //!< width x height of the first frame
  std::string_view metadata_json;  //!< the user metadata, a JSON object (as validated at intake)
};

//! The script for an image whose request named none: the script of the first route in `routes` whose every given
//! condition holds, else `fallback`. A metadata condition holds when the user metadata has that key with that text
//! (strings as they are, numbers and booleans as JSON writes them). Pure; never fails.
std::string RouteScript(const std::vector<RouteConfig>& routes, const RouteFacts& facts, const std::string& fallback);

}  // namespace imgpipe
