#include "ingest/stream_record.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace imgpipe {
namespace {

using ::testing::HasSubstr;

std::vector<StreamHeader> H(std::initializer_list<std::pair<const char*, const char*>> list) {
  std::vector<StreamHeader> out;
  for (const auto& [name, value] : list) {
    out.push_back({name, value ? std::optional<std::string>(value) : std::nullopt});
  }
  return out;
}

std::string CodeOf(const Result<StreamRecord>& r) {
  return r.ok() ? std::string("ok") : std::string(r.error().Code());
}

TEST(StreamRecordTest, InlineImageWithEveryHeader) {
  auto r = ParseStreamRecord(H({{"Content-Type", "image/jpeg"},
                                {"imgpipe-source-id", "cam-7/000123"},
                                {"imgpipe-pipeline", "faces"},
                                {"IMGPIPE-META-camera", "north gate"},
                                {"imgpipe-meta-lens_mm", "35"},
                                {"traceparent", "00-abc-def-01"}}),
                             "\xff\xd8\xff", {});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->content_type, "image/jpeg");
  EXPECT_EQ(r->source_id, "cam-7/000123");
  EXPECT_EQ(r->pipeline, "faces");
  EXPECT_EQ(r->metadata_json, R"({"camera":"north gate","lens_mm":"35"})");
  EXPECT_FALSE(r->claim);
}

TEST(StreamRecordTest, NoHeadersIsAnInlineImageWithDefaults) {
  auto r = ParseStreamRecord({}, "bytes", {});
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->source_id);
  EXPECT_EQ(r->pipeline, "");
  EXPECT_EQ(r->metadata_json, "{}");
  EXPECT_EQ(CodeOf(ParseStreamRecord({}, "", {})), "empty_record");
}

TEST(StreamRecordTest, ClaimCheck) {
  auto r = ParseStreamRecord(H({{"content-type", "application/vnd.imgpipe.claim-check+json"}}),
                             R"({"container": "incoming", "key": "2026/01/02/big.tiff"})", {});
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_TRUE(r->claim);
  EXPECT_EQ(r->claim->container, "incoming");
  EXPECT_EQ(r->claim->key, "2026/01/02/big.tiff");
  EXPECT_TRUE(ParseStreamRecord(H({{"content-type", "application/json; charset=utf-8"}}),
                                R"({"key": "a", "container": "incoming"})", {})
                  .ok());
}

TEST(StreamRecordTest, BadClaimChecksNameTheProblem) {
  const auto json = H({{"content-type", "application/json"}});
  struct Case {
    std::string value;
    std::string says;
  } cases[] = {
      {"not json", "not JSON"},
      {"[1,2]", "not a JSON object"},
      {R"({"container": "incoming"})", "needs both"},
      {R"({"container": "incoming", "key": "a", "url": "http://x"})", "unexpected member \"url\""},
      {R"({"container": "originals", "key": "a"})", "not in ingest.claim_containers"},
      {R"({"container": "incoming", "key": 7})", "unexpected member \"key\""},
      {R"({"container": "incoming", "key": "../../etc/passwd"})", "not a blob key"},
      {std::string(5000, ' '), "at most 4096 bytes"},
  };
  for (const auto& c : cases) {
    auto r = ParseStreamRecord(json, c.value, {});
    ASSERT_FALSE(r.ok()) << c.value;
    EXPECT_EQ(r.error().Code(), "bad_claim_check") << c.value;
    EXPECT_THAT(r.error().message, HasSubstr(c.says)) << c.value;
  }
}

TEST(StreamRecordTest, BadHeadersNameTheHeader) {
  struct Case {
    std::vector<StreamHeader> headers;
    std::string says;
  } cases[] = {
      {H({{"content-type", "text/html"}}), "neither an image type"},
      {H({{"content-type", "image/png"}, {"Content-Type", "image/png"}}), "appears twice"},
      {H({{"imgpipe-source-id", nullptr}}), "has no value"},
      {H({{"imgpipe-source-id", ""}}), "1-512 printable"},
      {H({{"imgpipe-source-id", "a b"}}), "1-512 printable"},
      {H({{"imgpipe-source-id", "a"}, {"imgpipe-source-id", "b"}}), "appears twice"},
      {H({{"imgpipe-pipeline", "Faces!"}}), "not a script name"},
      {H({{"imgpipe-meta-", "x"}}), "the name after imgpipe-meta-"},
      {H({{"imgpipe-meta-a.b", "x"}}), "the name after imgpipe-meta-"},
      {H({{"imgpipe-meta-a", "\xc3\x28"}}), "not UTF-8"},
      {H({{"imgpipe-meta-a", "1"}, {"imgpipe-meta-A", "2"}}), "appears twice"},
      {H({{"imgpipe-url", "http://example"}}), "unknown header"},
  };
  for (const auto& c : cases) {
    auto r = ParseStreamRecord(c.headers, "x", {});
    ASSERT_FALSE(r.ok()) << c.says;
    EXPECT_EQ(r.error().Code(), "bad_header") << c.says;
    EXPECT_THAT(r.error().message, HasSubstr(c.says));
  }
  StreamRecordLimits small;
  small.max_metadata_bytes = 20;
  auto big = ParseStreamRecord(H({{"imgpipe-meta-note", "a long enough value to pass twenty bytes"}}), "x", small);
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.error().kind, ErrorKind::kTooLarge);
  EXPECT_THAT(big.error().message, HasSubstr("limits.max_metadata_bytes"));
}

TEST(StreamRecordTest, MessagesNeverCarryRawBytes) {
  auto r = ParseStreamRecord(H({{"imgpipe-\x01\xff\n", "x"}}), "x", {});
  ASSERT_FALSE(r.ok());
  for (char c : r.error().message) EXPECT_TRUE(c >= 0x20 && c < 0x7f) << r.error().message;
}

TEST(StreamRecordTest, Utf8Validation) {
  EXPECT_TRUE(IsValidUtf8("plain"));
  EXPECT_TRUE(IsValidUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // past U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xe2\x82"));          // cut short
  EXPECT_FALSE(IsValidUtf8("\xff"));
}

// Hostile bytes from the corrupt corpus as header values, header names and claim checks: each is parsed or refused
// with a clear error, never a crash (ASan in the debug preset, the fuzzer for the rest).
TEST(StreamRecordTest, CorruptCorpusAsHeadersAndClaimChecks) {
  const char* env = std::getenv("IMGPIPE_CORPORA_DIR");
  std::filesystem::path dir = std::filesystem::path(env ? env : IMGPIPE_CORPORA_DIR) / "corrupt";
  ASSERT_TRUE(std::filesystem::is_directory(dir)) << dir << " (set IMGPIPE_CORPORA_DIR)";
  int files = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file() || entry.file_size() > 4 * 1024 * 1024) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string bytes = ss.str();
    const std::string head = bytes.substr(0, 300);
    ++files;
    for (const char* name : {"imgpipe-source-id", "imgpipe-pipeline", "imgpipe-meta-x", "content-type"}) {
      auto r = ParseStreamRecord({{name, bytes}}, bytes, {});
      if (!r.ok()) {
        EXPECT_FALSE(r.error().message.empty());
      }
    }
    auto named = ParseStreamRecord({{"imgpipe-meta-" + head, "v"}}, "x", {});
    EXPECT_FALSE(named.ok()) << entry.path();
    auto claim = ParseStreamRecord({{"content-type", std::string(kClaimCheckContentType)}}, bytes, {});
    ASSERT_FALSE(claim.ok()) << entry.path();
    EXPECT_EQ(claim.error().Code(), "bad_claim_check");
  }
  EXPECT_GT(files, 50);
}

}  // namespace
}  // namespace imgpipe
