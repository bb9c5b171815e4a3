#include "storage/azure/azure_signing.hpp"

#include <gtest/gtest.h>

#include "storage/azure/azure_blob_store.hpp"
#include "storage/xml.hpp"

namespace imgpipe {
namespace {

// The emulator's development account key, published in Microsoft's documentation (not a secret).
constexpr std::string_view kDevKey =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

HttpHeaders DocHeaders() {
  return {{"x-ms-version", "2015-02-21"}, {"x-ms-date", "Fri, 26 Jun 2015 23:39:12 GMT"}};
}

// "Authorize with Shared Key", the Get Container Metadata example: the string-to-sign is given in full there.
TEST(AzureSharedKey, MatchesTheDocumentsGetContainerMetadataExample) {
  std::string s = AzureSharedKeyStringToSign("GET", "/mycontainer?restype=container&comp=metadata&timeout=20",
                                             DocHeaders(), 0, "myaccount");
  EXPECT_EQ(s,
            "GET\n\n\n\n\n\n\n\n\n\n\n\n"
            "x-ms-date:Fri, 26 Jun 2015 23:39:12 GMT\nx-ms-version:2015-02-21\n"
            "/myaccount/mycontainer\ncomp:metadata\nrestype:container\ntimeout:20");
  // HMAC-SHA256 under the development key, as computed independently by `openssl dgst -sha256 -mac HMAC`.
  auto sig = AzureSharedKeySignature(s, kDevKey);
  ASSERT_TRUE(sig.ok());
  EXPECT_EQ(*sig, "1u9lui2jDxj0+fpbHjQ5m5NnastJRSYM+PSmfi8TXx4=");
}

// The document's canonicalized-resource examples: repeated parameters are joined sorted, names sorted.
TEST(AzureSharedKey, CanonicalizesRepeatedQueryParametersAsTheDocumentShows) {
  std::string s = AzureSharedKeyStringToSign(
      "GET", "/mycontainer?restype=container&comp=list&include=snapshots&include=metadata&include=uncommittedblobs",
      DocHeaders(), 0, "myaccount");
  EXPECT_TRUE(s.ends_with("/myaccount/mycontainer\ncomp:list\ninclude:metadata,snapshots,uncommittedblobs\n"
                          "restype:container"))
      << s;
}

TEST(AzureSharedKey, PlacesStandardHeadersAndDecodesQueryValues) {
  HttpHeaders h = DocHeaders();
  h.emplace_back("Content-Type", "application/xml");
  h.emplace_back("X-MS-Blob-Type", "  BlockBlob ");
  h.emplace_back("x-ms-range", "bytes=0-9");
  std::string s = AzureSharedKeyStringToSign("PUT", "/devstoreaccount1/c/a/b.jpg?comp=block&blockid=YWJj%3D%3D", h,
                                             11, "devstoreaccount1");
  EXPECT_EQ(s,
            "PUT\n\n\n11\n\napplication/xml\n\n\n\n\n\n\n"
            "x-ms-blob-type:BlockBlob\nx-ms-date:Fri, 26 Jun 2015 23:39:12 GMT\nx-ms-range:bytes=0-9\n"
            "x-ms-version:2015-02-21\n"
            "/devstoreaccount1/devstoreaccount1/c/a/b.jpg\nblockid:YWJj==\ncomp:block");
}

TEST(AzureSharedKey, RefusesAKeyThatIsNotBase64) {
  auto sig = AzureSharedKeySignature("x", "not base64!");
  ASSERT_FALSE(sig.ok());
  EXPECT_EQ(sig.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_NE(sig.error().message.find("storage.azure.key"), std::string::npos);
}

TEST(AzureSas, BuildsTheServiceSasStringToSignAndToken) {
  AzureServiceSas sas;
  sas.permissions = "racwdl";
  sas.start = "2026-01-01T00:00:00Z";
  sas.expiry = "2026-01-02T00:00:00Z";
  sas.account = "devstoreaccount1";
  sas.container = "imgpipe-originals";
  sas.protocol = "https,http";
  EXPECT_EQ(AzureServiceSasStringToSign(sas),
            "racwdl\n2026-01-01T00:00:00Z\n2026-01-02T00:00:00Z\n/blob/devstoreaccount1/imgpipe-originals\n\n\n"
            "https,http\n2022-11-02\nc\n\n\n\n\n\n\n");
  auto token = MakeAzureServiceSas(sas, kDevKey);
  ASSERT_TRUE(token.ok());
  // The signature computed independently with openssl over the string above.
  EXPECT_EQ(*token,
            "sv=2022-11-02&sp=racwdl&st=2026-01-01T00%3A00%3A00Z&se=2026-01-02T00%3A00%3A00Z&spr=https%2Chttp&sr=c"
            "&sig=gYNzVT%2B2eNUDANOsKUyi380xcpUydIVQQfk%2Bu4A2Qzw%3D");
}

TEST(AzureListBlobs, ParsesAPageAndItsMarker) {
  auto xml = ParseXml(
      "<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults ServiceEndpoint=\"http://x/\" "
      "ContainerName=\"c\"><Prefix>a/</Prefix><MaxResults>2</MaxResults><Blobs>"
      "<Blob><Name>a/1</Name><Properties><Last-Modified>Fri, 26 Jun 2015 23:39:12 GMT</Last-Modified>"
      "<Etag>0x8D</Etag><Content-Length>5</Content-Length></Properties></Blob>"
      "<Blob><Name>a/2</Name><Properties><Last-Modified>Fri, 26 Jun 2015 23:39:13 GMT</Last-Modified>"
      "<Etag>0x8E</Etag><Content-Length>0</Content-Length></Properties></Blob>"
      "</Blobs><NextMarker>2!8!YS8y</NextMarker></EnumerationResults>");
  ASSERT_TRUE(xml.ok());
  auto page = ParseAzureListBlobs(*xml, "originals");
  ASSERT_TRUE(page.ok()) << page.error().message;
  ASSERT_EQ(page->items.size(), 2u);
  EXPECT_EQ(page->items[0].key, "a/1");
  EXPECT_EQ(page->items[0].size, 5u);
  EXPECT_EQ(page->items[0].etag, "0x8D");
  EXPECT_EQ(page->items[1].container, "originals");
  EXPECT_EQ(page->continuation, "2!8!YS8y");
}

TEST(AzureListBlobs, RefusesAnswersItCannotTrust) {
  for (const char* body : {"<Error><Code>X</Code></Error>",
                           "<EnumerationResults><Blobs><Blob><Name>a</Name></Blob></Blobs></EnumerationResults>",
                           "<EnumerationResults><Blobs><Blob><Name>a</Name><Properties><Content-Length>-1"
                           "</Content-Length></Properties></Blob></Blobs></EnumerationResults>",
                           "<EnumerationResults><Blobs><Blob><Properties/></Blob></Blobs></EnumerationResults>"}) {
    auto xml = ParseXml(body);
    ASSERT_TRUE(xml.ok()) << body;
    auto page = ParseAzureListBlobs(*xml, "c");
    ASSERT_FALSE(page.ok()) << body;
    EXPECT_EQ(page.error().kind, ErrorKind::kUnavailable);
  }
}

}  // namespace
}  // namespace imgpipe
