#include "processing/exif.hpp"

#include <gtest/gtest.h>
#include <vips/vips.h>

#include <boost/json.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "processing/image_probe.hpp"

namespace imgpipe {
namespace {

using namespace std::string_literals;

// Builds TIFF structures (the body of an EXIF block) for tests, in either byte order.
class TiffBuilder {
 public:
  struct Field {
    uint16_t tag;
    uint16_t type;
    uint32_t count;
    std::string bytes;  //!< the value, already in the builder's byte order
    int points_to = -1; //!< for IFD pointers: the index of the IFD whose offset is the value
  };

  explicit TiffBuilder(bool little_endian) : le_(little_endian) {}

  std::string U16(uint16_t v) const {
    return le_ ? std::string{char(v & 0xFF), char(v >> 8)} : std::string{char(v >> 8), char(v & 0xFF)};
  }
  std::string U32(uint32_t v) const {
    return le_ ? U16(v & 0xFFFF) + U16(v >> 16) : U16(v >> 16) + U16(v & 0xFFFF);
  }
  Field Ascii(uint16_t tag, const std::string& text) const {
    return {tag, 2, static_cast<uint32_t>(text.size() + 1), text + '\0'};
  }
  Field Short(uint16_t tag, uint16_t v) const { return {tag, 3, 1, U16(v) + U16(0)}; }
  Field Byte(uint16_t tag, uint8_t v) const { return {tag, 1, 1, std::string{char(v), 0, 0, 0}}; }
  Field Rationals(uint16_t tag, const std::vector<std::pair<uint32_t, uint32_t>>& values) const {
    std::string bytes;
    for (auto [num, den] : values) bytes += U32(num) + U32(den);
    return {tag, 5, static_cast<uint32_t>(values.size()), bytes};
  }
  Field Pointer(uint16_t tag, int ifd) const { return {tag, 4, 1, U32(0), ifd}; }

  //! ifds[0] is IFD0. Layout: header, every IFD in order, then the values longer than 4 bytes.
  std::string Build(const std::vector<std::vector<Field>>& ifds) const {
    std::vector<uint32_t> ifd_offsets;
    uint32_t at = 8;
    for (const auto& ifd : ifds) {
      ifd_offsets.push_back(at);
      at += 2 + 12 * static_cast<uint32_t>(ifd.size()) + 4;
    }
    std::string out = le_ ? "II*\0"s : "MM\0*"s;
    out += U32(ifd_offsets[0]);
    std::string data;
    for (size_t i = 0; i < ifds.size(); ++i) {
      out += U16(static_cast<uint16_t>(ifds[i].size()));
      for (const Field& f : ifds[i]) {
        out += U16(f.tag) + U16(f.type) + U32(f.count);
        if (f.points_to >= 0) {
          out += U32(ifd_offsets[f.points_to]);
        } else if (f.bytes.size() <= 4) {
          out += f.bytes + std::string(4 - f.bytes.size(), '\0');
        } else {
          out += U32(at + static_cast<uint32_t>(data.size()));
          data += f.bytes;
        }
      }
      out += U32(0);  // no next IFD
    }
    return out + data;
  }

 private:
  bool le_;
};

std::string FullBlock(bool little_endian) {
  TiffBuilder b(little_endian);
  return b.Build({
      {b.Ascii(0x010F, "Canon"), b.Ascii(0x0110, "Canon EOS 5D   "), b.Short(0x0112, 6),
       b.Ascii(0x0131, "Firmware 1.1"), b.Ascii(0x0132, "2020:01:01 00:00:00"), b.Pointer(0x8769, 1),
       b.Pointer(0x8825, 2)},
      {b.Ascii(0x9003, "2019:07:14 10:20:30"), b.Ascii(0x9011, "+02:00"), b.Ascii(0xA434, "EF50mm f/1.8 II")},
      {b.Ascii(1, "S"), b.Rationals(2, {{48, 1}, {51, 1}, {2951, 100}}), b.Ascii(3, "W"),
       b.Rationals(4, {{2, 1}, {17, 1}, {402, 10}}), b.Byte(5, 1), b.Rationals(6, {{355, 10}})},
  });
}

void ExpectFullBlock(const ExifInfo& info) {
  EXPECT_EQ(info.make, "Canon");
  EXPECT_EQ(info.model, "Canon EOS 5D");  // trailing spaces trimmed
  EXPECT_EQ(info.orientation, 6);
  EXPECT_EQ(info.software, "Firmware 1.1");
  EXPECT_EQ(info.taken_at, "2019-07-14T10:20:30+02:00");
  EXPECT_EQ(info.lens_model, "EF50mm f/1.8 II");
  ASSERT_TRUE(info.gps_lat && info.gps_lon && info.gps_alt);
  EXPECT_NEAR(*info.gps_lat, -(48 + 51 / 60.0 + 29.51 / 3600), 1e-9);
  EXPECT_NEAR(*info.gps_lon, -(2 + 17 / 60.0 + 40.2 / 3600), 1e-9);
  EXPECT_NEAR(*info.gps_alt, -35.5, 1e-9);
}

TEST(ParseExifTest, ReadsEveryFieldInBothByteOrders) {
  for (bool le : {true, false}) {
    SCOPED_TRACE(le ? "little-endian" : "big-endian");
    auto info = ParseExif(FullBlock(le));
    ASSERT_TRUE(info.ok()) << info.error().message;
    ExpectFullBlock(*info);
  }
}

TEST(ParseExifTest, AcceptsTheExifPrefixLibvipsKeeps) {
  auto info = ParseExif("Exif\0\0"s + FullBlock(true));
  ASSERT_TRUE(info.ok()) << info.error().message;
  ExpectFullBlock(*info);
}

TEST(ParseExifTest, FallsBackToDateTimeWithoutTheCaptureOffset) {
  TiffBuilder b(true);
  auto info = ParseExif(b.Build({{b.Ascii(0x0132, "2021:12:31 23:59:59"), b.Pointer(0x8769, 1)},
                                 {b.Ascii(0x9011, "-05:00")}}));
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->taken_at, "2021-12-31T23:59:59");
  EXPECT_FALSE(info->make);
  EXPECT_FALSE(info->gps_lat);
  EXPECT_FALSE(info->orientation);
}

TEST(ParseExifTest, UnknownDatePlaceholdersAreNoDate) {
  TiffBuilder b(false);
  for (const std::string& placeholder : {"0000:00:00 00:00:00"s, "    :  :     :  :  "s, "2020:13:01 00:00:00"s,
                                         "garbage"s, ""s}) {
    auto info = ParseExif(b.Build({{b.Ascii(0x0132, placeholder)}}));
    ASSERT_TRUE(info.ok());
    EXPECT_FALSE(info->taken_at) << "'" << placeholder << "' gave " << *info->taken_at;
  }
}

TEST(ParseExifTest, TrimsTrailingNulsAndSpacesButKeepsInnerOnes) {
  TiffBuilder b(true);
  TiffBuilder::Field make = b.Ascii(0x010F, "NIKON CORPORATION");
  make.bytes += "\0\0  \0"s;  // padding some cameras write, counted in the field
  make.count = static_cast<uint32_t>(make.bytes.size());
  auto info = ParseExif(b.Build({{make, b.Ascii(0x0110, "   ")}}));
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->make, "NIKON CORPORATION");
  EXPECT_FALSE(info->model);  // all blank: no value
}

TEST(ParseExifTest, RefusesBlocksWithoutASoundHeader) {
  for (const std::string& bad : {""s, "Exif\0\0"s, "II*\0"s, "XX*\0\x08\0\0\0"s, "II*\0\xFF\xFF\0\0"s,
                                 "MM\0*\0\0\0\x04"s, "\xFF\xD8\xFF\xE1"s}) {
    auto info = ParseExif(bad);
    ASSERT_FALSE(info.ok());
    EXPECT_EQ(info.error().kind, ErrorKind::kInvalidArgument);
  }
}

TEST(ParseExifTest, LeavesUnreadableFieldsEmptyAndReadsTheRest) {
  TiffBuilder b(true);
  std::string block = b.Build({{b.Ascii(0x010F, "Pentax"), b.Ascii(0x0110, "K-1 Mark II long name")}});
  // Point Model's value past the end of the block.
  const size_t model_entry = 8 + 2 + 12;
  block.replace(model_entry + 8, 4, b.U32(0xFFFFFFF0));
  auto info = ParseExif(block);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->make, "Pentax");
  EXPECT_FALSE(info->model);
}

TEST(ParseExifTest, SurvivesIfdLoopsAndTruncatedTables) {
  TiffBuilder b(false);
  // The Exif IFD pointer and the GPS pointer both point back at IFD0.
  std::string looped = b.Build({{b.Ascii(0x010F, "Loop"), b.Pointer(0x8769, 0), b.Pointer(0x8825, 0)}});
  auto info = ParseExif(looped);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->make, "Loop");

  // An entry count larger than the block: the entries that fit are read.
  std::string truncated = b.Build({{b.Short(0x0112, 3), b.Ascii(0x010F, "Sony")}});
  truncated.replace(8, 2, b.U16(0xFFFF));
  info = ParseExif(truncated);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->orientation, 3);
}

TEST(ParseExifTest, RefusesImpossibleValues) {
  TiffBuilder b(true);
  auto info = ParseExif(b.Build({{b.Short(0x0112, 9), b.Pointer(0x8825, 1)},
                                 {b.Rationals(2, {{10, 0}, {0, 1}, {0, 1}}), b.Ascii(1, "N"),
                                  b.Rationals(4, {{200, 1}, {0, 1}, {0, 1}}), b.Ascii(3, "E"),
                                  b.Rationals(6, {{1, 0}})}}));
  ASSERT_TRUE(info.ok());
  EXPECT_FALSE(info->orientation);  // 9 is not an EXIF orientation
  EXPECT_FALSE(info->gps_lat);      // zero denominator
  EXPECT_FALSE(info->gps_lon);      // 200 degrees
  EXPECT_FALSE(info->gps_alt);

  // A coordinate without its hemisphere is not reported.
  info = ParseExif(b.Build({{b.Pointer(0x8825, 1)}, {b.Rationals(2, {{10, 1}, {0, 1}, {0, 1}})}}));
  ASSERT_TRUE(info.ok());
  EXPECT_FALSE(info->gps_lat);
}

TEST(ParseExifTest, ReadsIntegersWhateverIntegerTypeTheWriterChose) {
  TiffBuilder b(true);
  // Orientation as SLONG (gThumb writes this; exiftool reads it), Orientation as negative SSHORT (not a value).
  auto info = ParseExif(b.Build({{{0x0112, 9, 1, b.U32(6)}}}));
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->orientation, 6);
  info = ParseExif(b.Build({{{0x0112, 8, 1, b.U16(0xFFFA) + b.U16(0)}}}));
  ASSERT_TRUE(info.ok());
  EXPECT_FALSE(info->orientation);
}

// Deterministic mutations of a sound block: whatever the bytes, parsing returns (no crash, no hang, and for ASan
// builds no out-of-bounds read) and reports only valid values. The fuzz target explores further.
TEST(ParseExifTest, MutatedBlocksNeverBreakTheParser) {
  const std::string original = FullBlock(true);
  uint32_t state = 12345;
  auto next = [&] { return state = state * 1103515245u + 12345u; };
  for (int round = 0; round < 20000; ++round) {
    std::string block = original;
    const int changes = 1 + static_cast<int>(next() % 8);
    for (int c = 0; c < changes; ++c) block[next() % block.size()] = static_cast<char>(next() >> 16);
    if (next() % 4 == 0) block.resize(next() % block.size());
    auto info = ParseExif(block);
    if (!info.ok()) continue;
    if (info->orientation) {
      EXPECT_TRUE(*info->orientation >= 1 && *info->orientation <= 8);
    }
    if (info->gps_lat) {
      EXPECT_LE(std::fabs(*info->gps_lat), 90.0);
    }
    if (info->gps_lon) {
      EXPECT_LE(std::fabs(*info->gps_lon), 180.0);
    }
  }
}

// --- Comparison with exiftool on the real photos in corpora/exif ---

std::string RunCommand(const std::string& command) {
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), pclose);
  if (!pipe) return {};
  std::string out;
  char buffer[65536];
  size_t got;
  while ((got = fread(buffer, 1, sizeof buffer, pipe.get())) > 0) out.append(buffer, got);
  return out;
}

std::optional<std::string> JsonText(const boost::json::object& o, const char* key) {
  const auto* v = o.if_contains(key);
  if (v == nullptr) return std::nullopt;
  std::string text;
  if (v->is_string()) text = std::string(v->as_string());
  else if (v->is_int64()) text = std::to_string(v->as_int64());
  else if (v->is_uint64()) text = std::to_string(v->as_uint64());
  else return std::nullopt;
  while (!text.empty() && (text.back() == ' ' || text.back() == '\0')) text.pop_back();
  if (text.empty()) return std::nullopt;
  return text;
}

std::optional<double> JsonNumber(const boost::json::object& o, const char* key) {
  const auto* v = o.if_contains(key);
  if (v == nullptr || !v->is_number()) return std::nullopt;  // exiftool writes "" or "undef" for unreadable values
  return v->to_number<double>();
}

// exiftool's "YYYY:MM:DD HH:MM:SS" in the form ExifInfo uses; placeholders (zeros, blanks) are no date.
std::optional<std::string> ExpectedDate(const std::optional<std::string>& exiftool_date) {
  static const std::regex kDate(R"((\d{4}):(\d{2}):(\d{2}) (\d{2}):(\d{2}):(\d{2}).*)");
  std::smatch m;
  if (!exiftool_date || !std::regex_match(*exiftool_date, m, kDate)) return std::nullopt;
  const int month = std::stoi(m[2]), day = std::stoi(m[3]);
  if (month < 1 || month > 12 || day < 1 || day > 31) return std::nullopt;
  return m[1].str() + "-" + m[2].str() + "-" + m[3].str() + "T" + m[4].str() + ":" + m[5].str() + ":" + m[6].str();
}

// EXIF as the product reads it: libvips' "exif-data" blob (JPEG APP1, HEIF Exif item) through ParseExif.
ExifInfo ExifOf(const std::string& path) {
  ExifInfo info;
  VipsImage* image = vips_image_new_from_file(path.c_str(), nullptr);
  if (image == nullptr) {
    ADD_FAILURE() << "libvips cannot open " << path;
    vips_error_clear();
    return info;
  }
  const void* data = nullptr;
  size_t length = 0;
  if (vips_image_get_typeof(image, VIPS_META_EXIF_NAME) != 0 &&
      vips_image_get_blob(image, VIPS_META_EXIF_NAME, &data, &length) == 0) {
    auto parsed = ParseExif(std::string_view(static_cast<const char*>(data), length));
    if (parsed.ok()) info = *parsed;
  }
  g_object_unref(image);
  return info;
}

std::string Show(const std::optional<std::string>& v) { return v ? "\"" + *v + "\"" : "-"; }
std::string Show(const std::optional<double>& v) { return v ? std::to_string(*v) : "-"; }
std::string Show(const std::optional<int>& v) { return v ? std::to_string(*v) : "-"; }

TEST(ParseExifCorpusTest, AgreesWithExiftoolOnEveryPhoto) {
  InitVips(1);
  const std::string version = RunCommand("exiftool -ver 2>/dev/null");
  ASSERT_FALSE(version.empty())
      << "exiftool is not installed; this test compares our EXIF parser with it. Run scripts/install-deps "
         "(Debian package libimage-exiftool-perl).";

  const std::filesystem::path dir = std::filesystem::path(IMGPIPE_CORPORA_DIR) / "exif";
  const std::string json = RunCommand(
      "exiftool -json -n -G1 -r -Make -Model -DateTimeOriginal -ModifyDate -OffsetTimeOriginal -GPSLatitude "
      "-GPSLongitude -GPSAltitude -Orientation '" + dir.string() + "' 2>/dev/null");
  ASSERT_FALSE(json.empty()) << "exiftool printed nothing for " << dir;
  std::map<std::string, boost::json::object> by_path;
  const boost::json::value parsed = boost::json::parse(json);
  for (const auto& entry : parsed.as_array()) {
    const auto& o = entry.as_object();
    by_path[std::filesystem::path(std::string(o.at("SourceFile").as_string())).lexically_normal().string()] = o;
  }

  int files = 0, with_make = 0, with_date = 0, with_gps = 0, with_orientation = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file() || e.path().string().find("/LICENSES/") != std::string::npos) continue;
    const std::string path = e.path().lexically_normal().string();
    SCOPED_TRACE(path);
    ASSERT_TRUE(by_path.count(path)) << "exiftool did not report " << path;
    const boost::json::object& tool = by_path[path];
    const ExifInfo ours = ExifOf(path);
    ++files;

    const auto make = JsonText(tool, "IFD0:Make");
    const auto model = JsonText(tool, "IFD0:Model");
    const auto original = ExpectedDate(JsonText(tool, "ExifIFD:DateTimeOriginal"));
    const auto offset = JsonText(tool, "ExifIFD:OffsetTimeOriginal");
    std::optional<std::string> date = original;
    if (date && offset) *date += *offset;
    if (!date) date = ExpectedDate(JsonText(tool, "IFD0:ModifyDate"));
    const auto lat = JsonNumber(tool, "Composite:GPSLatitude");
    const auto lon = JsonNumber(tool, "Composite:GPSLongitude");
    std::optional<int> orientation;
    if (auto o = JsonNumber(tool, "IFD0:Orientation"); o && *o >= 1 && *o <= 8) orientation = static_cast<int>(*o);

    std::printf("[ exif     ] %s: make %s model %s taken %s gps %s,%s orientation %s\n",
                e.path().filename().c_str(), Show(ours.make).c_str(), Show(ours.model).c_str(),
                Show(ours.taken_at).c_str(), Show(ours.gps_lat).c_str(), Show(ours.gps_lon).c_str(),
                Show(ours.orientation).c_str());
    EXPECT_EQ(ours.make, make);
    EXPECT_EQ(ours.model, model);
    EXPECT_EQ(ours.taken_at, date);
    EXPECT_EQ(ours.gps_lat.has_value(), lat.has_value()) << "exiftool " << Show(lat) << ", ours " << Show(ours.gps_lat);
    EXPECT_EQ(ours.gps_lon.has_value(), lon.has_value()) << "exiftool " << Show(lon) << ", ours " << Show(ours.gps_lon);
    if (lat && ours.gps_lat) {
      EXPECT_NEAR(*ours.gps_lat, *lat, 1e-5);
    }
    if (lon && ours.gps_lon) {
      EXPECT_NEAR(*ours.gps_lon, *lon, 1e-5);
    }
    if (auto alt = JsonNumber(tool, "Composite:GPSAltitude"); alt && ours.gps_alt) {
      EXPECT_NEAR(*ours.gps_alt, *alt, 1e-3);
    }
    EXPECT_EQ(ours.orientation, orientation);

    with_make += make.has_value();
    with_date += date.has_value();
    with_gps += lat.has_value();
    with_orientation += orientation.has_value();
  }
  // The corpus is rich: the comparison must have covered every kind of field, not just absent ones.
  EXPECT_GE(files, 45);
  EXPECT_GE(with_make, 20);
  EXPECT_GE(with_date, 20);
  EXPECT_GE(with_gps, 4);
  EXPECT_GE(with_orientation, 30);
}

}  // namespace
}  // namespace imgpipe
