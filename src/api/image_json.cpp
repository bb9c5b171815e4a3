#include "api/image_json.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <cstdio>

#include "core/clock.hpp"

namespace imgpipe {

namespace json = boost::json;

namespace {

json::value OptString(const std::optional<std::string>& s) { return s ? json::value(*s) : json::value(nullptr); }
json::value OptTime(const std::optional<TimePoint>& t) {
  return t ? json::value(FormatRfc3339(*t)) : json::value(nullptr);
}

std::string ImagePath(const ImageRecord& image) { return "/v1/images/" + image.id.value(); }

// The facts known from the moment an image is accepted: the whole 201 body, and the start of the full image JSON.
json::object AcceptedFields(const ImageRecord& image) {
  json::object o;
  o["id"] = image.id.value();
  o["status"] = ImageStatusName(image.status);
  o["sha256"] = image.sha256;
  o["bytes"] = image.bytes;
  o["format"] = image.format;
  o["content_type"] = image.content_type;
  o["width"] = image.width;
  o["height"] = image.height;
  o["frames"] = image.frames;
  o["received_at"] = FormatRfc3339(image.received_at);
  o["expires_at"] = FormatRfc3339(image.expires_at);
  return o;
}

json::object BaseLinks(const ImageRecord& image) {
  json::object links;
  links["self"] = ImagePath(image);
  links["original"] = ImagePath(image) + "/original";
  return links;
}

}  // namespace

json::object ImageToJson(const ImageRecord& image, const std::vector<RenditionRecord>& renditions) {
  json::object o = AcceptedFields(image);
  o["has_alpha"] = image.has_alpha;
  o["colour_space"] = image.colour_space;
  o["has_icc"] = image.has_icc;
  o["orientation"] = image.exif.orientation ? json::value(*image.exif.orientation) : json::value(nullptr);
  json::object exif;
  exif["make"] = OptString(image.exif.make);
  exif["model"] = OptString(image.exif.model);
  exif["taken_at"] = OptString(image.exif.taken_at);
  if (image.exif.gps_lat && image.exif.gps_lon) {
    json::object gps;
    gps["lat"] = *image.exif.gps_lat;
    gps["lon"] = *image.exif.gps_lon;
    gps["alt"] = image.exif.gps_alt ? json::value(*image.exif.gps_alt) : json::value(nullptr);
    exif["gps"] = std::move(gps);
  } else {
    exif["gps"] = nullptr;
  }
  exif["lens_model"] = OptString(image.exif.lens_model);
  exif["software"] = OptString(image.exif.software);
  o["exif"] = std::move(exif);
  json::error_code ec;
  json::value meta = json::parse(image.user_metadata_json, ec);
  o["metadata"] = ec || !meta.is_object() ? json::value(json::object()) : meta;
  o["source"] = image.source;
  o["source_ref"] = image.source_ref.empty() ? json::value(nullptr) : json::value(image.source_ref);
  o["pipeline"] = image.pipeline;
  o["processed_at"] = OptTime(image.processed_at);
  o["expired_at"] = OptTime(image.expired_at);
  if (image.phash) {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(*image.phash));
    o["phash"] = buf;
  } else {
    o["phash"] = nullptr;
  }
  o["dominant_colour"] = OptString(image.dominant_colour);
  o["error"] = OptString(image.error);
  json::array rs;
  json::object rendition_links;
  for (const RenditionRecord& r : renditions) {
    json::object ro;
    ro["name"] = r.name;
    ro["width"] = r.width;
    ro["height"] = r.height;
    ro["format"] = r.format;
    ro["content_type"] = r.content_type;
    ro["bytes"] = r.bytes;
    std::string url = ImagePath(image) + "/renditions/" + r.name;
    ro["url"] = url;
    rendition_links[r.name] = url;
    rs.push_back(std::move(ro));
  }
  o["renditions"] = std::move(rs);
  json::object links = BaseLinks(image);
  links["renditions"] = std::move(rendition_links);
  o["links"] = std::move(links);
  return o;
}

std::string AcceptedJson(const ImageRecord& image) {
  json::object o = AcceptedFields(image);
  o["links"] = BaseLinks(image);
  return json::serialize(o);
}

Result<std::string> ValidateUserMetadata(std::string_view text, size_t max_bytes) {
  if (text.size() > max_bytes) {
    return MakeError(ErrorKind::kInvalidArgument, "metadata is " + std::to_string(text.size()) +
                                                      " bytes; the limit is " + std::to_string(max_bytes) +
                                                      " (limits.max_metadata_bytes)");
  }
  json::error_code ec;
  json::parse_options opts;
  opts.max_depth = 4;
  json::value v = json::parse(text, ec, {}, opts);
  if (ec) return MakeError(ErrorKind::kInvalidArgument, "metadata is not valid JSON: " + ec.message());
  if (!v.is_object()) return MakeError(ErrorKind::kInvalidArgument, "metadata must be a JSON object of key/values");
  for (const auto& kv : v.as_object()) {
    if (kv.key().empty() || kv.key().size() > 128) {
      return MakeError(ErrorKind::kInvalidArgument, "metadata keys must be 1 to 128 characters");
    }
    const json::value& x = kv.value();
    if (!(x.is_string() || x.is_number() || x.is_bool() || x.is_null())) {
      return MakeError(ErrorKind::kInvalidArgument, "metadata value of \"" + std::string(kv.key()) +
                                                        "\" must be a string, number, boolean or null");
    }
  }
  return json::serialize(v);
}

boost::json::object HoldToJson(const LegalHold& hold) {
  return {{"image_id", hold.image_id.value()},
          {"reason", hold.reason},
          {"held_by", hold.held_by},
          {"held_at", FormatRfc3339(hold.held_at)}};
}

}  // namespace imgpipe
