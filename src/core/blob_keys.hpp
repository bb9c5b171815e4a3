#pragma once

#include <cstdio>
#include <ctime>
#include <string>

#include "core/clock.hpp"
#include "core/ids.hpp"

namespace imgpipe {

//! The day folder "yyyy/mm/dd/" (UTC) that an image's blobs live under, in both the originals and the renditions
//! containers. Keys are shaped by the day so retention can find whole expired days by prefix.
inline std::string DayPrefix(TimePoint t) {
  time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04d/%02d/%02d/", (tm.tm_year + 1900) % 10000, (tm.tm_mon + 1) % 100,
                tm.tm_mday % 100);
  return buf;
}

//! "yyyy/mm/dd/<id>/": the folder of one image's blobs, from the timestamp inside its id.
inline std::string ImageBlobPrefix(const ImageId& id) { return DayPrefix(ImageIdTime(id)) + id.value() + "/"; }
//! The original's key: "yyyy/mm/dd/<id>/original".
inline std::string OriginalBlobKey(const ImageId& id) { return ImageBlobPrefix(id) + "original"; }
//! A rendition's key: "yyyy/mm/dd/<id>/<name>.<ext>". Deterministic, so a re-run overwrites, never duplicates.
inline std::string RenditionBlobKey(const ImageId& id, const std::string& name, const std::string& ext) {
  return ImageBlobPrefix(id) + name + "." + ext;
}

}  // namespace imgpipe
