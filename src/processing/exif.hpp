#pragma once

#include <string_view>

#include "core/result.hpp"
#include "core/records.hpp"

namespace imgpipe {

//! Parses an EXIF block: a TIFF structure ("II*\0" or "MM\0*"), optionally preceded by "Exif\0\0" (as libvips'
//! "exif-data" field and JPEG APP1 carry it). Reads IFD0 (Make, Model, Orientation, DateTime, Software), the Exif IFD
//! (DateTimeOriginal, OffsetTimeOriginal, LensModel) and the GPS IFD. Bounded: every offset is checked, IFD loops are
//! refused, at most 64 KiB... of entries are visited. Malformed input gives kInvalidArgument; fields it cannot read
//! are left empty rather than failing the whole block when the structure is otherwise sound.
Result<ExifInfo> ParseExif(std::string_view data);

}  // namespace imgpipe
