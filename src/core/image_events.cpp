#include "core/image_events.hpp"

#include <boost/json/serialize.hpp>

namespace imgpipe {

std::string EncodeImageEvent(const ImageEvent& event) {
  boost::json::object o;
  o["type"] = event.type;
  o["version"] = 1;
  o["image_id"] = event.image_id.value();
  o["time"] = FormatRfc3339(event.time);
  for (const auto& [k, v] : event.details) o[k] = v;
  return boost::json::serialize(o);
}

ImageEvent StoredEvent(const ImageRecord& image, TimePoint now) {
  ImageEvent e{"image.stored", image.id, now, {}};
  e.details["source"] = image.source;
  e.details["received_at"] = FormatRfc3339(image.received_at);
  e.details["format"] = image.format;
  e.details["width"] = image.width;
  e.details["height"] = image.height;
  e.details["bytes"] = image.bytes;
  e.details["sha256"] = image.sha256;
  e.details["pipeline"] = image.pipeline;
  e.details["expires_at"] = FormatRfc3339(image.expires_at);
  return e;
}

}  // namespace imgpipe
