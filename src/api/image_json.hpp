#pragma once

#include <boost/json/object.hpp>

#include <string>
#include <vector>

#include "core/records.hpp"
#include "core/result.hpp"

namespace imgpipe {

//! The public JSON of an image (GET /v1/images/{id}); see docs/openapi.yaml, schema Image.
boost::json::object ImageToJson(const ImageRecord& image, const std::vector<RenditionRecord>& renditions);
//! {"image_id", "reason", "held_by", "held_at"}.
boost::json::object HoldToJson(const LegalHold& hold);
//! The 201 body of an accepted upload; schema Accepted.
std::string AcceptedJson(const ImageRecord& image);
//! Validates client metadata: a JSON object of at most `max_bytes`, keys 1..128 chars, values string, number, bool
//! or null. Returns it re-serialized (canonical), or kInvalidArgument naming the problem.
Result<std::string> ValidateUserMetadata(std::string_view text, size_t max_bytes);

}  // namespace imgpipe
