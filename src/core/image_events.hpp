#pragma once

#include <boost/json/object.hpp>

#include <chrono>
#include <string>
#include <string_view>

#include "core/clock.hpp"
#include "core/records.hpp"

namespace imgpipe {

//! An event about one image for downstream consumers (docs/EVENTS.md): "image.stored", "image.processed",
//! "image.failed", "image.expired". `details` holds the type's own fields.
struct ImageEvent {
  std::string type;
  ImageId image_id;
  TimePoint time;
  boost::json::object details;
};

//! Where events go (the Kafka events topic, kafka.events_topic). Publish never blocks on the broker for long and never
//! fails the caller: delivery is at least once while the sink can buffer, and what it must drop is counted
//! (imgpipe_events_dropped_total). Thread-safe.
class ImageEvents {
 public:
  virtual ~ImageEvents() = default;
  virtual void Publish(ImageEvent event) = 0;
  //! Waits up to `timeout` until every event published before this call has left the buffer: acknowledged by the
  //! sink (or dropped and counted); true if so. A caller about to acknowledge the work an event reports (a worker's
  //! job) calls it first: once the work is acknowledged nothing would publish the event again after a crash. A sink
  //! without a buffer returns true.
  virtual bool Flush(std::chrono::milliseconds timeout) {
    (void)timeout;
    return true;
  }
};

//! The event as one JSON object: {"type","version":1,"image_id","time", ...details}.
std::string EncodeImageEvent(const ImageEvent& event);

//! The "image.stored" event of a newly stored image.
ImageEvent StoredEvent(const ImageRecord& image, TimePoint now);

}  // namespace imgpipe
