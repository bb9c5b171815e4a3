#pragma once

#include <string_view>

#include "core/result.hpp"
#include "core/records.hpp"

namespace imgpipe {

//! Parses an EXIF block: a TIFF structure ("II*\0" or "MM\0*"), optionally preceded by "Exif\0\0" (as libvips'
//! "exif-data" field and JPEG APP1 carry it). Reads IFD0 (Make, Model, Orientation, DateTime, Software), the Exif IFD
//! (DateTimeOriginal, OffsetTimeOriginal, LensModel) and the GPS IFD. Bounded and safe on any input (a fuzz target):
//! every offset is checked against the block, only those three IFDs are read and each at most once (pointer loops
//! end), an entry table is read only as far as it fits, strings are cut at 1 KiB. Without a TIFF header or with IFD0
//! outside the block: kInvalidArgument. Otherwise fields it cannot read (bad offsets, zero denominators, dates that
//! are placeholders, coordinates without hemisphere or out of range, orientation outside 1..8) are left empty and
//! the rest is returned. ASCII values lose trailing NULs and blanks. Thread-safe (pure).
Result<ExifInfo> ParseExif(std::string_view data);

}  // namespace imgpipe
