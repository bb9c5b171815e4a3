#include "http/multipart_parser.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace imgpipe {
namespace {

using ::testing::HasSubstr;

//! Records events as text, merging adjacent data so that how the body was chunked does not show.
class Recorder : public MultipartHandler {
 public:
  Status OnPartBegin(const MultipartPart& part) override {
    log_.push_back("begin name=[" + part.name + "] filename=[" + part.filename + "] type=[" + part.content_type + "]");
    data_open_ = false;
    return Ok();
  }
  Status OnPartData(std::string_view data) override {
    EXPECT_FALSE(data.empty());
    data_bytes_ += data.size();
    if (!data_open_) log_.push_back("data:");
    data_open_ = true;
    log_.back().append(data);
    if (fail_after_bytes_ && data_bytes_ > *fail_after_bytes_) {
      return MakeError(ErrorKind::kTooLarge, "handler says too large");
    }
    return Ok();
  }
  Status OnPartEnd() override {
    log_.push_back("end");
    data_open_ = false;
    return Ok();
  }

  std::vector<std::string> log_;
  size_t data_bytes_ = 0;
  std::optional<size_t> fail_after_bytes_;

 private:
  bool data_open_ = false;
};

struct Outcome {
  std::vector<std::string> events;
  std::string error;  // empty when Feed and Finish succeeded

  bool operator==(const Outcome&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Outcome& o) {
  for (auto& e : o.events) os << "  " << testing::PrintToString(e) << "\n";
  return os << "  error: " << o.error;
}

//! Parses `body` fed in the given pieces (cut at `cuts`, ascending offsets).
Outcome ParseCut(const std::string& boundary, std::string_view body, const std::vector<size_t>& cuts,
                 MultipartLimits limits = {}) {
  Recorder recorder;
  MultipartParser parser(boundary, &recorder, limits);
  Outcome out;
  size_t start = 0;
  std::vector<size_t> ends = cuts;
  ends.push_back(body.size());
  for (size_t end : ends) {
    auto s = parser.Feed(body.substr(start, end - start));
    start = end;
    if (!s.ok()) {
      out.error = s.error().message;
      break;
    }
  }
  if (out.error.empty()) {
    auto s = parser.Finish();
    if (!s.ok()) out.error = s.error().message;
  }
  out.events = recorder.log_;
  return out;
}

Outcome Parse(const std::string& boundary, std::string_view body, MultipartLimits limits = {}) {
  return ParseCut(boundary, body, {}, limits);
}

//! The same body split at every offset, and in 1-byte chunks, must give the same events and the same error.
void ExpectChunkingInvariant(const std::string& boundary, const std::string& body, MultipartLimits limits = {}) {
  Outcome whole = Parse(boundary, body, limits);
  for (size_t cut = 0; cut <= body.size(); ++cut) {
    ASSERT_EQ(ParseCut(boundary, body, {cut}, limits), whole) << "split at " << cut;
  }
  std::vector<size_t> every;
  for (size_t i = 1; i < body.size(); ++i) every.push_back(i);
  ASSERT_EQ(ParseCut(boundary, body, every, limits), whole) << "1-byte chunks";
  // Three pieces at a few spreads, to cover carried tails meeting short chunks.
  for (size_t a = 0; a < body.size(); a += 7) {
    for (size_t b = a; b < body.size() && b < a + 80; b += 3) {
      ASSERT_EQ(ParseCut(boundary, body, {a, b}, limits), whole) << "split at " << a << " and " << b;
    }
  }
}

const std::string kBoundary = "----WebKitFormBoundary7MA4YWxkTrZu0gW";

std::string SampleBody() {
  std::string binary = "\x89PNG\r\n\x1a\n";
  binary += std::string("\0\r\r\n-\r\n--", 9);
  binary += "\r\n--" + kBoundary.substr(0, 10) + "not it\r\n";  // a near-miss of the delimiter
  binary += "\r\n-" + kBoundary;                                 // the boundary without "--" is data too
  return "This is the preamble, ignored.\r\n"
         "--" + kBoundary + "\r\n"
         "Content-Disposition: form-data; name=\"title\"\r\n"
         "\r\n"
         "A \"quoted\" title\r\n"
         "--" + kBoundary + "\r\n"
         "content-disposition: form-data; name=\"file\"; filename=\"a;b \\\"c\\\".png\"\r\n"
         "Content-Type: image/png\r\n"
         "X-Ignored: yes\r\n"
         "\r\n" + binary + "\r\n"
         "--" + kBoundary + "  \t\r\n"  // transport padding after the boundary
         "Content-Disposition: FORM-DATA; name=empty\r\n"
         "\r\n"
         "\r\n"
         "--" + kBoundary + "--\r\n"
         "epilogue, ignored\r\n";
}

TEST(MultipartParserTest, ParsesPartsHeadersAndData) {
  Outcome out = Parse(kBoundary, SampleBody());
  ASSERT_EQ(out.error, "");
  std::string binary = "\x89PNG\r\n\x1a\n";
  binary += std::string("\0\r\r\n-\r\n--", 9);
  binary += "\r\n--" + kBoundary.substr(0, 10) + "not it\r\n";
  binary += "\r\n-" + kBoundary;
  std::vector<std::string> expected = {
      "begin name=[title] filename=[] type=[]",
      "data:A \"quoted\" title",
      "end",
      "begin name=[file] filename=[a;b \"c\".png] type=[image/png]",
      "data:" + binary,
      "end",
      "begin name=[empty] filename=[] type=[]",
      "end",
  };
  EXPECT_EQ(out.events, expected);
}

TEST(MultipartParserTest, SameEventsWhateverTheChunking) { ExpectChunkingInvariant(kBoundary, SampleBody()); }

TEST(MultipartParserTest, ShortBoundaryAndBodyWithoutPreamble) {
  std::string body = "--b\r\nContent-Disposition: form-data; name=x\r\n\r\n--b-\r\n-b\r\n--b--";
  Outcome out = Parse("b", body);
  ASSERT_EQ(out.error, "");
  EXPECT_EQ(out.events, (std::vector<std::string>{"begin name=[x] filename=[] type=[]", "data:--b-\r\n-b", "end"}));
  ExpectChunkingInvariant("b", body);
}

TEST(MultipartParserTest, ErrorsAreTheSameWhateverTheChunking) {
  const std::string head = "--xyz\r\nContent-Disposition: form-data; name=f\r\n\r\n";
  for (const std::string& body : {
           head + "data without end",
           head + "data\r\n--xyzjunk\r\n",
           std::string("no boundary here at all\r\n--xy\r\n"),
           std::string("--xyz\r\nContent-Disposition: form-data; name=f\r\nBad\rHeader: 1\r\n\r\n--xyz--"),
           std::string("--xyz\r\nContent-Disposition: form-data; name=f\r\n") + std::string(200, 'h') + "\r\n\r\n",
       }) {
    ExpectChunkingInvariant("xyz", body, MultipartLimits{.max_part_header_bytes = 100, .max_parts = 3});
    EXPECT_NE(Parse("xyz", body).error, "") << body;
  }
}

TEST(MultipartParserTest, ContentDispositionForms) {
  auto part_of = [](const std::string& disposition) {
    Outcome out = Parse("B", "--B\r\nContent-Disposition: " + disposition + "\r\n\r\nv\r\n--B--");
    return out.error.empty() ? out.events.at(0) : "error: " + out.error;
  };
  EXPECT_EQ(part_of("form-data; name=\"a b\""), "begin name=[a b] filename=[] type=[]");
  EXPECT_EQ(part_of("form-data; name=plain; filename=photo.jpg"), "begin name=[plain] filename=[photo.jpg] type=[]");
  EXPECT_EQ(part_of("form-data;name=\"q\\\"uote\";filename=\"back\\\\slash\""),
            "begin name=[q\"uote] filename=[back\\slash] type=[]");
  EXPECT_EQ(part_of("Form-Data ; NAME = \"x\" ; FileName=\"\""), "begin name=[x] filename=[] type=[]");
  EXPECT_EQ(part_of("form-data; name=\"f\"; filename=\"caf\xc3\xa9.jpg\""),
            "begin name=[f] filename=[caf\xc3\xa9.jpg] type=[]");
  EXPECT_EQ(part_of("form-data; filename*=UTF-8''x.jpg; name=f"), "begin name=[f] filename=[] type=[]");
  EXPECT_THAT(part_of("attachment; name=f"), HasSubstr("is \"attachment\", expected form-data"));
  EXPECT_THAT(part_of("form-data; filename=x.jpg"), HasSubstr("part 1 has no name in its Content-Disposition"));
  EXPECT_THAT(part_of("form-data; name=\"unterminated"), HasSubstr("unterminated quoted string in name"));
  EXPECT_THAT(part_of("form-data; name=a; name=b"), HasSubstr("parameter name appears twice"));
  EXPECT_THAT(part_of("form-data; name"), HasSubstr("expected '=' after name"));
  EXPECT_THAT(part_of("form-data; name=a junk"), HasSubstr("expected ';' between parameters"));
}

TEST(MultipartParserTest, HeaderProblems) {
  auto error_of = [](const std::string& headers, MultipartLimits limits = {}) {
    return Parse("B", "--B\r\n" + headers + "\r\n\r\nv\r\n--B--", limits).error;
  };
  EXPECT_EQ(error_of("Content-Type: image/png"), "part 1 has no Content-Disposition header");
  EXPECT_EQ(error_of("Content-Disposition: form-data; name=a\r\nContent-Disposition: form-data; name=b"),
            "part 1 has two Content-Disposition headers");
  EXPECT_EQ(error_of("Content-Disposition: form-data; name=a\rX: 1"), "CR without LF in the headers of part 1");
  EXPECT_EQ(error_of("Content-Disposition: form-data; name=a\nX: 1"), "LF without CR in the headers of part 1");
  EXPECT_EQ(error_of(std::string("Content-Disposition: form-data; name=a\0", 39)),
            "control character in the headers of part 1");
  EXPECT_THAT(error_of("Content-Disposition: form-data;\r\n name=a"), HasSubstr("folded header line"));
  EXPECT_THAT(error_of("no colon here"), HasSubstr("malformed header line in part 1: \"no colon here\""));
  EXPECT_THAT(error_of("Bad Name: x\r\nContent-Disposition: form-data; name=a"), HasSubstr("malformed header line"));

  std::string big = "Content-Disposition: form-data; name=a\r\nX-Pad: " + std::string(9000, 'p');
  EXPECT_EQ(error_of(big), "part header larger than 8 KiB");
  // Exactly at the limit is fine: the limit counts the header lines with their CRLFs.
  std::string exact = "Content-Disposition: form-data; name=a";  // 38 bytes + CRLF = 40
  EXPECT_EQ(error_of(exact, {.max_part_header_bytes = 40, .max_parts = 16}), "");
  EXPECT_EQ(error_of(exact, {.max_part_header_bytes = 39, .max_parts = 16}), "part header larger than 39 bytes");
}

TEST(MultipartParserTest, PartWithNoHeadersAtAllIsRefused) {
  EXPECT_EQ(Parse("B", "--B\r\n\r\nvalue\r\n--B--").error, "part 1 has no Content-Disposition header");
}

TEST(MultipartParserTest, TooManyParts) {
  std::string body;
  for (int i = 0; i < 4; ++i) body += "--B\r\nContent-Disposition: form-data; name=p" + std::to_string(i) + "\r\n\r\nx\r\n";
  body += "--B--";
  EXPECT_EQ(Parse("B", body, {.max_part_header_bytes = 8192, .max_parts = 4}).error, "");
  Outcome out = Parse("B", body, {.max_part_header_bytes = 8192, .max_parts = 3});
  EXPECT_EQ(out.error, "multipart body has more than 3 parts");
  EXPECT_EQ(std::count(out.events.begin(), out.events.end(), "end"), 3);
}

TEST(MultipartParserTest, TruncatedAndBoundarylessBodies) {
  EXPECT_EQ(Parse("B", "--B\r\nContent-Disposition: form-data; name=a\r\n\r\npartial").error,
            "multipart body ended before the closing boundary");
  EXPECT_EQ(Parse("B", "--B\r\nContent-Disposition: form-data; name=a\r\n").error,
            "multipart body ended before the closing boundary");
  EXPECT_EQ(Parse("B", "--B").error, "multipart body ended before the closing boundary");
  EXPECT_EQ(Parse("B", "--B-").error, "multipart body ended before the closing boundary");
  EXPECT_EQ(Parse("B", "").error,
            "multipart body has no boundary line: the boundary \"B\" from Content-Type never appears");
  EXPECT_THAT(Parse("B", "just some bytes\r\n--A\r\n").error, HasSubstr("never appears"));
  EXPECT_EQ(Parse("B", "--B\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--Bextra").error,
            "malformed boundary line: expected CRLF or \"--\" after the boundary");
  EXPECT_EQ(Parse("B", "--B\rX").error, "malformed boundary line: expected CRLF or \"--\" after the boundary");
  // An empty form (only the closing delimiter) is well-formed.
  Outcome empty = Parse("B", "--B--\r\n");
  EXPECT_EQ(empty.error, "");
  EXPECT_TRUE(empty.events.empty());
}

TEST(MultipartParserTest, NestedMultipartIsJustData) {
  std::string inner = "--inner\r\nContent-Disposition: form-data; name=x\r\n\r\ny\r\n--inner--";
  std::string body = "--outer\r\nContent-Disposition: form-data; name=n\r\nContent-Type: multipart/mixed; "
                     "boundary=inner\r\n\r\n" + inner + "\r\n--outer--";
  Outcome out = Parse("outer", body);
  ASSERT_EQ(out.error, "");
  ASSERT_EQ(out.events.size(), 3u);
  EXPECT_EQ(out.events[1], "data:" + inner);
  ExpectChunkingInvariant("outer", body);
}

TEST(MultipartParserTest, EpilogueAndLaterFeedsAreIgnored) {
  Recorder recorder;
  MultipartParser parser("B", &recorder);
  ASSERT_TRUE(parser.Feed("--B\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--B--").ok());
  ASSERT_TRUE(parser.Feed("\r\n--B\r\nContent-Disposition: form-data; name=b\r\n\r\ny\r\n--B--").ok());
  ASSERT_TRUE(parser.Finish().ok());
  EXPECT_EQ(recorder.log_.size(), 3u);
}

TEST(MultipartParserTest, HandlerErrorStopsParsingAndIsReturnedUnchanged) {
  Recorder recorder;
  recorder.fail_after_bytes_ = 10;
  MultipartParser parser("B", &recorder);
  std::string body = "--B\r\nContent-Disposition: form-data; name=a\r\n\r\n" + std::string(100, 'x') + "\r\n--B--";
  auto s = parser.Feed(body);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().kind, ErrorKind::kTooLarge);
  EXPECT_EQ(s.error().message, "handler says too large");
  size_t events = recorder.log_.size();
  auto again = parser.Feed("more");
  EXPECT_EQ(again.error().message, "handler says too large");
  EXPECT_EQ(parser.Finish().error().message, "handler says too large");
  EXPECT_EQ(recorder.log_.size(), events);
  EXPECT_EQ(recorder.log_.back().find("end"), std::string::npos);  // no OnPartEnd after the failure
}

TEST(MultipartParserTest, LargePartStreamsAsItArrives) {
  Recorder recorder;
  MultipartParser parser(kBoundary, &recorder);
  ASSERT_TRUE(parser.Feed("--" + kBoundary + "\r\nContent-Disposition: form-data; name=f\r\n\r\n").ok());
  std::string chunk(1 << 20, 'd');
  for (size_t fed = chunk.size(); fed <= (16u << 20); fed += chunk.size()) {
    ASSERT_TRUE(parser.Feed(chunk).ok());
    // Everything but a possible delimiter prefix has been handed on: the parser holds no more than that.
    EXPECT_GE(recorder.data_bytes_ + kBoundary.size() + 4, fed);
  }
  ASSERT_TRUE(parser.Feed("\r\n--" + kBoundary + "--").ok());
  ASSERT_TRUE(parser.Finish().ok());
  EXPECT_EQ(recorder.data_bytes_, 16u << 20);
}

TEST(MultipartBoundaryTest, ParsesTheContentType) {
  EXPECT_EQ(*MultipartBoundary("multipart/form-data; boundary=abc"), "abc");
  EXPECT_EQ(*MultipartBoundary("Multipart/Form-Data;BOUNDARY=\"a b:c\""), "a b:c");
  EXPECT_EQ(*MultipartBoundary("multipart/form-data; charset=utf-8; boundary=----WebKit123"), "----WebKit123");
  EXPECT_EQ(*MultipartBoundary(" multipart/form-data ; boundary = x "), "x");
  EXPECT_EQ(*MultipartBoundary("multipart/form-data; boundary=" + std::string(70, 'b')), std::string(70, 'b'));

  auto error_of = [](std::string_view content_type) {
    auto r = MultipartBoundary(content_type);
    EXPECT_FALSE(r.ok()) << content_type;
    if (r.ok()) return std::string();
    EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
    return r.error().message;
  };
  EXPECT_THAT(error_of("image/jpeg"), HasSubstr("Content-Type is \"image/jpeg\"; uploads must be multipart/form-data"));
  EXPECT_THAT(error_of(""), HasSubstr("must be multipart/form-data"));
  EXPECT_THAT(error_of("multipart/mixed; boundary=x"), HasSubstr("must be multipart/form-data"));
  EXPECT_THAT(error_of("multipart/form-data"), HasSubstr("has no boundary parameter"));
  EXPECT_THAT(error_of("multipart/form-data; charset=utf-8"), HasSubstr("has no boundary parameter"));
  EXPECT_THAT(error_of("multipart/form-data; boundary=\"\""), HasSubstr("invalid multipart boundary"));
  EXPECT_THAT(error_of("multipart/form-data; boundary=" + std::string(71, 'b')), HasSubstr("1..70 characters"));
  EXPECT_THAT(error_of("multipart/form-data; boundary=\"ends in space \""), HasSubstr("invalid multipart boundary"));
  EXPECT_THAT(error_of("multipart/form-data; boundary=\"a\r\nb\""), HasSubstr("invalid multipart boundary"));
  EXPECT_THAT(error_of("multipart/form-data; boundary=a; boundary=b"), HasSubstr("appears twice"));
  EXPECT_THAT(error_of("multipart/form-data; boundary=\"open"), HasSubstr("unterminated"));
}

}  // namespace
}  // namespace imgpipe
