#include "storage/s3/sigv4.hpp"

#include <gtest/gtest.h>

namespace imgpipe {
namespace {

constexpr char kEmptySha[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

// AWS's Signature Version 4 test suite, "get-vanilla" (documented example credentials AKIDEXAMPLE).
TEST(SigV4, GetVanillaFromTheTestSuite) {
  SigV4Key key{"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "us-east-1", "service"};
  HttpHeaders h{{"Host", "example.amazonaws.com"}, {"X-Amz-Date", "20150830T123600Z"}};
  auto s = SignV4("GET", "/", h, kEmptySha, key, "20150830T123600Z");
  EXPECT_EQ(s.canonical_request,
            std::string("GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n") +
                kEmptySha);
  EXPECT_EQ(s.string_to_sign,
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n"
            "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63");
  EXPECT_EQ(s.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
            "SignedHeaders=host;x-amz-date, "
            "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
}

// "get-vanilla-query-order-key-case": the query is sorted before signing.
TEST(SigV4, SortsTheQueryAsTheTestSuiteShows) {
  SigV4Key key{"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "us-east-1", "service"};
  HttpHeaders h{{"Host", "example.amazonaws.com"}, {"X-Amz-Date", "20150830T123600Z"}};
  auto s = SignV4("GET", "/?Param2=value2&Param1=value1", h, kEmptySha, key, "20150830T123600Z");
  EXPECT_EQ(s.signature, "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500");
}

// The S3 documentation's "Signature Calculations for the Authorization Header" examples (AKIAIOSFODNN7EXAMPLE).
SigV4Key S3DocKey() { return {"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "us-east-1", "s3"}; }

TEST(SigV4, S3GetObjectExample) {
  HttpHeaders h{{"Host", "examplebucket.s3.amazonaws.com"},
                {"Range", "bytes=0-9"},
                {"x-amz-content-sha256", kEmptySha},
                {"x-amz-date", "20130524T000000Z"}};
  auto s = SignV4("GET", "/test.txt", h, kEmptySha, S3DocKey(), "20130524T000000Z");
  EXPECT_EQ(s.string_to_sign,
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
            "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
  EXPECT_EQ(s.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

TEST(SigV4, S3ListObjectsExample) {
  HttpHeaders h{{"Host", "examplebucket.s3.amazonaws.com"},
                {"x-amz-content-sha256", kEmptySha},
                {"x-amz-date", "20130524T000000Z"}};
  auto s = SignV4("GET", "/?max-keys=2&prefix=J", h, kEmptySha, S3DocKey(), "20130524T000000Z");
  EXPECT_EQ(s.signed_headers, "host;x-amz-content-sha256;x-amz-date");
  EXPECT_EQ(s.signature, "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
}

TEST(SigV4, ValuelessQueryParametersGetAnEmptyValue) {
  HttpHeaders h{{"Host", "h"}, {"x-amz-date", "20130524T000000Z"}};
  auto s = SignV4("GET", "/b?lifecycle", h, kEmptySha, S3DocKey(), "20130524T000000Z");
  EXPECT_NE(s.canonical_request.find("\n/b\nlifecycle=\n"), std::string::npos) << s.canonical_request;
}

TEST(SigV4, AmzDateFormat) {
  TimePoint t = std::chrono::sys_days(std::chrono::year(2013) / 5 / 24) + std::chrono::seconds(61);
  EXPECT_EQ(AmzDate(t), "20130524T000101Z");
}

}  // namespace
}  // namespace imgpipe
