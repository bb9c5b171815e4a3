#include "api/image_json.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <gtest/gtest.h>

namespace imgpipe {
namespace {

TEST(UserMetadataTest, AcceptsFlatObjectsAndCanonicalises) {
  auto r = ValidateUserMetadata(R"({ "camera" : "front", "n": 3, "ok": true, "x": null })", 8192);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r, R"({"camera":"front","n":3,"ok":true,"x":null})");
}

TEST(UserMetadataTest, RefusesWhatIsNotFlatKeyValues) {
  for (const char* bad : {"[]", "\"text\"", "{\"a\": {\"b\": 1}}", "{\"a\": [1]}", "{", "{\"\": 1}", "nul"}) {
    auto r = ValidateUserMetadata(bad, 8192);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
  }
  std::string big = "{\"k\": \"" + std::string(9000, 'x') + "\"}";
  auto r = ValidateUserMetadata(big, 8192);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("limits.max_metadata_bytes"), std::string::npos);
}

TEST(ImageJsonTest, CarriesTheContractFields) {
  ImageRecord image;
  image.id = NewImageId(FromUnixMicros(1'764'111'342'000'000));
  image.status = ImageStatus::kProcessed;
  image.format = "jpeg";
  image.width = 640;
  image.height = 480;
  image.exif.make = "Canon";
  image.exif.gps_lat = 52.5;
  image.exif.gps_lon = 13.4;
  image.exif.orientation = 6;
  image.phash = 0x0123456789abcdefULL;
  image.user_metadata_json = R"({"a":"b"})";
  RenditionRecord r;
  r.name = "thumb-256";
  r.width = 256;
  r.height = 192;
  r.format = "jpeg";
  r.bytes = 1234;
  auto j = ImageToJson(image, {r});
  EXPECT_EQ(j.at("status").as_string(), "processed");
  EXPECT_EQ(j.at("orientation").as_int64(), 6);
  EXPECT_EQ(j.at("phash").as_string(), "0123456789abcdef");
  EXPECT_EQ(j.at("exif").at("make").as_string(), "Canon");
  EXPECT_DOUBLE_EQ(j.at("exif").at("gps").at("lat").as_double(), 52.5);
  EXPECT_TRUE(j.at("exif").at("model").is_null());
  EXPECT_EQ(j.at("metadata").at("a").as_string(), "b");
  const auto& rs = j.at("renditions").as_array();
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].at("url").as_string(), "/v1/images/" + image.id.value() + "/renditions/thumb-256");
  EXPECT_EQ(rs[0].at("width").as_int64(), 256);
  auto accepted = boost::json::parse(AcceptedJson(image)).as_object();
  EXPECT_EQ(accepted.at("id").as_string(), image.id.value());
  EXPECT_EQ(accepted.at("links").at("original").as_string(), "/v1/images/" + image.id.value() + "/original");
}

}  // namespace
}  // namespace imgpipe
