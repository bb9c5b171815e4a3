#include "processing/exif.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>

namespace imgpipe {
namespace {

// TIFF field types (TIFF 6.0 section 2, plus IFD from TIFF tech note 1).
enum FieldType : uint16_t {
  kByte = 1, kAscii = 2, kShort = 3, kLong = 4, kRational = 5, kSByte = 6, kUndefined = 7, kSShort = 8,
  kSLong = 9, kSRational = 10, kFloat = 11, kDouble = 12, kIfd = 13,
};

// Tags we read.
constexpr uint16_t kTagMake = 0x010F;
constexpr uint16_t kTagModel = 0x0110;
constexpr uint16_t kTagOrientation = 0x0112;
constexpr uint16_t kTagSoftware = 0x0131;
constexpr uint16_t kTagDateTime = 0x0132;
constexpr uint16_t kTagExifIfd = 0x8769;
constexpr uint16_t kTagGpsIfd = 0x8825;
constexpr uint16_t kTagDateTimeOriginal = 0x9003;
constexpr uint16_t kTagOffsetTimeOriginal = 0x9011;
constexpr uint16_t kTagLensModel = 0xA434;
constexpr uint16_t kTagGpsLatitudeRef = 1;
constexpr uint16_t kTagGpsLatitude = 2;
constexpr uint16_t kTagGpsLongitudeRef = 3;
constexpr uint16_t kTagGpsLongitude = 4;
constexpr uint16_t kTagGpsAltitudeRef = 5;
constexpr uint16_t kTagGpsAltitude = 6;

// ASCII values longer than this are cut: no camera writes a 1 KiB model name, and the strings end up in database
// rows and JSON answers.
constexpr size_t kMaxAsciiBytes = 1024;

size_t TypeSize(uint16_t type) {
  switch (type) {
    case kByte: case kAscii: case kSByte: case kUndefined: return 1;
    case kShort: case kSShort: return 2;
    case kLong: case kSLong: case kFloat: case kIfd: return 4;
    case kRational: case kSRational: case kDouble: return 8;
    default: return 0;
  }
}

// A bounds-checked view of the TIFF structure. Every read checks its range against the block; nothing follows an
// offset without that check, so any input is safe to parse.
class TiffReader {
 public:
  TiffReader(std::string_view data, bool little_endian) : data_(data), little_endian_(little_endian) {}

  size_t size() const { return data_.size(); }
  bool InRange(uint64_t offset, uint64_t length) const {
    return offset <= data_.size() && length <= data_.size() - offset;
  }
  uint16_t U16(size_t at) const {
    const auto b0 = static_cast<uint8_t>(data_[at]);
    const auto b1 = static_cast<uint8_t>(data_[at + 1]);
    return little_endian_ ? static_cast<uint16_t>(b0 | (b1 << 8)) : static_cast<uint16_t>((b0 << 8) | b1);
  }
  uint32_t U32(size_t at) const {
    const uint32_t hi = U16(at);
    const uint32_t lo = U16(at + 2);
    return little_endian_ ? (lo << 16) | hi : (hi << 16) | lo;
  }
  std::string_view Bytes(size_t at, size_t length) const { return data_.substr(at, length); }

 private:
  std::string_view data_;
  bool little_endian_;
};

// One 12-byte IFD entry, with the location of its value resolved and checked.
struct Entry {
  uint16_t tag = 0;
  uint16_t type = 0;
  uint32_t count = 0;
  size_t value_at = 0;  //!< offset of the value inside the block; valid only when `readable`
  bool readable = false;
};

Entry ReadEntry(const TiffReader& r, size_t entry_at) {
  Entry e;
  e.tag = r.U16(entry_at);
  e.type = r.U16(entry_at + 2);
  e.count = r.U32(entry_at + 4);
  const size_t unit = TypeSize(e.type);
  if (unit == 0 || e.count == 0) return e;
  const uint64_t total = uint64_t{unit} * e.count;
  // Values of four bytes or less sit in the entry itself; longer ones at an offset from the TIFF header.
  const uint64_t at = total <= 4 ? entry_at + 8 : r.U32(entry_at + 8);
  if (!r.InRange(at, total)) return e;
  e.value_at = static_cast<size_t>(at);
  e.readable = true;
  return e;
}

// An integer of any integer type; negative values (possible in the signed types) give nullopt, as none of the
// integer tags we read can be negative. Writers disagree on types: Orientation is SHORT by the standard, but
// SLONG and BYTE occur in the wild and exiftool reads them, so we do too.
std::optional<uint32_t> ReadUnsigned(const TiffReader& r, const Entry& e, uint32_t index = 0) {
  if (!e.readable || index >= e.count) return std::nullopt;
  switch (e.type) {
    case kByte: case kUndefined: return static_cast<uint8_t>(r.Bytes(e.value_at + index, 1)[0]);
    case kSByte: {
      const auto v = static_cast<int8_t>(r.Bytes(e.value_at + index, 1)[0]);
      return v < 0 ? std::nullopt : std::optional<uint32_t>(v);
    }
    case kShort: return r.U16(e.value_at + 2 * size_t{index});
    case kSShort: {
      const auto v = static_cast<int16_t>(r.U16(e.value_at + 2 * size_t{index}));
      return v < 0 ? std::nullopt : std::optional<uint32_t>(v);
    }
    case kLong: case kIfd: return r.U32(e.value_at + 4 * size_t{index});
    case kSLong: {
      const auto v = static_cast<int32_t>(r.U32(e.value_at + 4 * size_t{index}));
      return v < 0 ? std::nullopt : std::optional<uint32_t>(v);
    }
    default: return std::nullopt;
  }
}

std::optional<double> ReadRational(const TiffReader& r, const Entry& e, uint32_t index) {
  if (!e.readable || index >= e.count) return std::nullopt;
  const size_t at = e.value_at + 8 * size_t{index};
  if (e.type == kRational) {
    const uint32_t num = r.U32(at);
    const uint32_t den = r.U32(at + 4);
    if (den == 0) return std::nullopt;
    return static_cast<double>(num) / den;
  }
  if (e.type == kSRational) {
    const auto num = static_cast<int32_t>(r.U32(at));
    const auto den = static_cast<int32_t>(r.U32(at + 4));
    if (den == 0) return std::nullopt;
    return static_cast<double>(num) / den;
  }
  return std::nullopt;
}

// ASCII value up to its first NUL, without trailing spaces; empty values give nullopt. Some writers store strings
// as UNDEFINED or BYTE, which we accept the same way.
std::optional<std::string> ReadAscii(const TiffReader& r, const Entry& e) {
  if (!e.readable || (e.type != kAscii && e.type != kUndefined && e.type != kByte)) return std::nullopt;
  std::string_view text = r.Bytes(e.value_at, std::min<size_t>(e.count, kMaxAsciiBytes));
  if (const size_t nul = text.find('\0'); nul != std::string_view::npos) text = text.substr(0, nul);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\r' || text.back() == '\n')) {
    text.remove_suffix(1);
  }
  if (text.empty()) return std::nullopt;
  return std::string(text);
}

// "YYYY:MM:DD HH:MM:SS" (EXIF 2.3 section 4.6.4) to "YYYY-MM-DDTHH:MM:SS". Anything else, including the
// "0000:00:00 00:00:00" and all-blank placeholders the standard allows for an unknown date, gives nullopt.
std::optional<std::string> NormaliseDate(const std::string& raw) {
  if (raw.size() < 19) return std::nullopt;
  static constexpr std::string_view kPattern = "dddd:dd:dd dd:dd:dd";
  for (size_t i = 0; i < kPattern.size(); ++i) {
    const char c = raw[i];
    const bool digit = c >= '0' && c <= '9';
    if (kPattern[i] == 'd' ? !digit : c != kPattern[i]) {
      // Some writers use '-' between date parts or 'T' before the time; accept those too.
      const bool alt_sep = (i == 4 || i == 7) ? c == '-' : (i == 10 ? c == 'T' : false);
      if (!alt_sep) return std::nullopt;
    }
  }
  const int month = (raw[5] - '0') * 10 + (raw[6] - '0');
  const int day = (raw[8] - '0') * 10 + (raw[9] - '0');
  const int hour = (raw[11] - '0') * 10 + (raw[12] - '0');
  const int minute = (raw[14] - '0') * 10 + (raw[15] - '0');
  const int second = (raw[17] - '0') * 10 + (raw[18] - '0');
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) return std::nullopt;
  std::string out = raw.substr(0, 19);
  out[4] = '-';
  out[7] = '-';
  out[10] = 'T';
  return out;
}

// "+HH:MM" / "-HH:MM" (EXIF 2.31 OffsetTime*); anything else gives nullopt.
std::optional<std::string> NormaliseOffset(const std::string& raw) {
  if (raw.size() != 6 || (raw[0] != '+' && raw[0] != '-') || raw[3] != ':') return std::nullopt;
  for (size_t i : {1, 2, 4, 5}) {
    if (raw[i] < '0' || raw[i] > '9') return std::nullopt;
  }
  return raw;
}

// Degrees from a 3-rational degrees/minutes/seconds value. Fewer than three values (some writers store only
// degrees and decimal minutes) are read as far as they go.
std::optional<double> ReadDegrees(const TiffReader& r, const Entry& e) {
  if (!e.readable || e.count == 0) return std::nullopt;
  const double scale[3] = {1.0, 60.0, 3600.0};
  double degrees = 0;
  for (uint32_t i = 0; i < 3 && i < e.count; ++i) {
    const std::optional<double> part = ReadRational(r, e, i);
    if (!part) return std::nullopt;
    degrees += *part / scale[i];
  }
  if (!std::isfinite(degrees)) return std::nullopt;
  return degrees;
}

class ExifParser {
 public:
  explicit ExifParser(const TiffReader& r) : r_(r) {}

  // Walks one IFD, calling `on_entry` for each entry. An entry table that runs past the end of the block (a
  // truncated APP1 segment) is read as far as whole entries go; entries whose values cannot be resolved are passed
  // with readable == false.
  template <typename F>
  bool WalkIfd(uint32_t offset, F&& on_entry) {
    if (offset < 8 || !r_.InRange(offset, 2)) return false;
    // Each IFD is visited once: a pointer back to an IFD already read (a loop) is ignored.
    for (int i = 0; i < visited_count_; ++i) {
      if (visited_[i] == offset) return false;
    }
    if (visited_count_ >= kMaxIfds) return false;
    visited_[visited_count_++] = offset;
    const size_t fits = (r_.size() - offset - 2) / 12;
    const size_t count = std::min<size_t>(r_.U16(offset), fits);
    for (size_t i = 0; i < count; ++i) on_entry(ReadEntry(r_, offset + 2 + i * 12));
    return true;
  }

  ExifInfo Parse(uint32_t ifd0) {
    ExifInfo info;
    std::optional<uint32_t> exif_ifd, gps_ifd;
    std::optional<std::string> date_time;
    WalkIfd(ifd0, [&](const Entry& e) {
      switch (e.tag) {
        case kTagMake: info.make = ReadAscii(r_, e); break;
        case kTagModel: info.model = ReadAscii(r_, e); break;
        case kTagSoftware: info.software = ReadAscii(r_, e); break;
        case kTagDateTime: date_time = ReadAscii(r_, e); break;
        case kTagOrientation:
          if (auto v = ReadUnsigned(r_, e); v && *v >= 1 && *v <= 8) info.orientation = static_cast<int>(*v);
          break;
        case kTagExifIfd: exif_ifd = ReadUnsigned(r_, e); break;
        case kTagGpsIfd: gps_ifd = ReadUnsigned(r_, e); break;
        default: break;
      }
    });
    std::optional<std::string> original, offset;
    if (exif_ifd) {
      WalkIfd(*exif_ifd, [&](const Entry& e) {
        switch (e.tag) {
          case kTagDateTimeOriginal: original = ReadAscii(r_, e); break;
          case kTagOffsetTimeOriginal: offset = ReadAscii(r_, e); break;
          case kTagLensModel: info.lens_model = ReadAscii(r_, e); break;
          default: break;
        }
      });
    }
    if (original) info.taken_at = NormaliseDate(*original);
    if (info.taken_at) {
      if (offset) {
        if (auto normalised = NormaliseOffset(*offset)) *info.taken_at += *normalised;
      }
    } else if (date_time) {
      // DateTime is the file's change time, not the capture time, so the capture offset does not apply to it.
      info.taken_at = NormaliseDate(*date_time);
    }
    if (gps_ifd) ParseGps(*gps_ifd, &info);
    return info;
  }

 private:
  static constexpr int kMaxIfds = 3;

  void ParseGps(uint32_t offset, ExifInfo* info) {
    std::optional<std::string> lat_ref, lon_ref;
    std::optional<double> lat, lon, alt;
    std::optional<uint32_t> alt_ref;
    WalkIfd(offset, [&](const Entry& e) {
      switch (e.tag) {
        case kTagGpsLatitudeRef: lat_ref = ReadAscii(r_, e); break;
        case kTagGpsLatitude: lat = ReadDegrees(r_, e); break;
        case kTagGpsLongitudeRef: lon_ref = ReadAscii(r_, e); break;
        case kTagGpsLongitude: lon = ReadDegrees(r_, e); break;
        case kTagGpsAltitudeRef: alt_ref = ReadUnsigned(r_, e); break;
        case kTagGpsAltitude: alt = ReadRational(r_, e, 0); break;
        default: break;
      }
    });
    // A coordinate without its hemisphere is ambiguous, and out-of-range values are not positions: both are
    // left empty rather than reported wrongly.
    if (lat && lat_ref && (*lat_ref == "N" || *lat_ref == "S") && *lat <= 90.0) {
      info->gps_lat = *lat_ref == "S" ? -*lat : *lat;
    }
    if (lon && lon_ref && (*lon_ref == "E" || *lon_ref == "W") && *lon <= 180.0) {
      info->gps_lon = *lon_ref == "W" ? -*lon : *lon;
    }
    if (alt && std::isfinite(*alt)) info->gps_alt = (alt_ref && *alt_ref == 1) ? -*alt : *alt;
  }

  const TiffReader& r_;
  uint32_t visited_[kMaxIfds] = {};
  int visited_count_ = 0;
};

}  // namespace

Result<ExifInfo> ParseExif(std::string_view data) {
  if (data.substr(0, 6) == std::string_view("Exif\0\0", 6)) data.remove_prefix(6);
  if (data.size() < 8) return MakeError(ErrorKind::kInvalidArgument, "EXIF block is too short for a TIFF header");
  bool little_endian;
  if (data.substr(0, 4) == std::string_view("II*\0", 4)) {
    little_endian = true;
  } else if (data.substr(0, 4) == std::string_view("MM\0*", 4)) {
    little_endian = false;
  } else {
    return MakeError(ErrorKind::kInvalidArgument, "EXIF block does not start with a TIFF header (II*\\0 or MM\\0*)");
  }
  const TiffReader reader(data, little_endian);
  const uint32_t ifd0 = reader.U32(4);
  if (ifd0 < 8 || !reader.InRange(ifd0, 2)) {
    return MakeError(ErrorKind::kInvalidArgument, "EXIF IFD0 offset " + std::to_string(ifd0) +
                                                      " is outside the block of " + std::to_string(data.size()) +
                                                      " bytes");
  }
  ExifParser parser(reader);
  return parser.Parse(ifd0);
}

}  // namespace imgpipe
