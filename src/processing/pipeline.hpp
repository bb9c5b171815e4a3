#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "core/result.hpp"

namespace imgpipe {

struct RenditionOutput {
  std::string name;
  std::string format;        //!< "jpeg", "webp", "png", "avif"
  std::string content_type;  //!< "image/jpeg", ...
  std::string extension;     //!< "jpg", "webp", "png", "avif"
  int width = 0;
  int height = 0;
  std::string bytes;         //!< encoded, metadata stripped
};

struct PipelineOutput {
  std::vector<RenditionOutput> renditions;  //!< in the order of the config
  std::optional<uint64_t> phash;            //!< 64-bit DCT perceptual hash of the upright image
  std::optional<std::string> dominant_colour;  //!< "#rrggbb"
  double decode_seconds = 0;
  double encode_seconds = 0;
};

//! Runs the default pipeline on the image file at `path`: auto-orient from EXIF, convert to sRGB, each rendition
//! with shrink-on-load and sequential access, never upscaled, metadata stripped; then the perceptual hash and the
//! dominant colour from the smallest rendition's pixels. Deterministic for the same input and config. Errors:
//! kInvalidImage when the file does not decode, kInternal for encoder failures. Thread-safe.
Result<PipelineOutput> RunDefaultPipeline(const std::string& path, const std::vector<RenditionConfig>& renditions);

//! Hamming distance between two perceptual hashes (0 = same picture).
int PhashDistance(uint64_t a, uint64_t b);

}  // namespace imgpipe
