#include "storage/xml.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace imgpipe {
namespace {

TEST(Xml, ParsesAListingWithEntitiesCdataAndNamespaces) {
  auto doc = ParseXml(
      "\xEF\xBB\xBF<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<!-- a comment -->"
      "<s3:ListBucketResult xmlns:s3=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
      "<s3:Contents><s3:Key>a&amp;b&#x2F;c&#233;</s3:Key><s3:Size>42</s3:Size></s3:Contents>"
      "<s3:Contents><s3:Key><![CDATA[x<y]]></s3:Key><Empty/></s3:Contents>"
      "<NextContinuationToken>tok=</NextContinuationToken></s3:ListBucketResult>\n");
  ASSERT_TRUE(doc.ok()) << doc.error().message;
  EXPECT_EQ(doc->name, "ListBucketResult");
  ASSERT_EQ(doc->children.size(), 3u);
  EXPECT_EQ(doc->children[0].ChildText("Key"), "a&b/c\xC3\xA9");
  EXPECT_EQ(doc->children[0].ChildText("Size"), "42");
  EXPECT_EQ(doc->children[1].ChildText("Key"), "x<y");
  ASSERT_NE(doc->children[1].Child("Empty"), nullptr);
  EXPECT_EQ(doc->ChildText("NextContinuationToken"), "tok=");
  EXPECT_EQ(doc->ChildText("Missing"), "");
}

TEST(Xml, RefusesMalformedAndHostileDocumentsWithTheirOffset) {
  struct Case {
    std::string text;
    std::string expect;
  };
  const Case cases[] = {
      {"", "expected the root element"},
      {"<a>", "unclosed element <a>"},
      {"<a></b>", "</b> closes <a>"},
      {"<a>&bogus;</a>", "unknown entity &bogus;"},
      {"<a>&#0;</a>", "invalid character"},
      {"<a>&#x110000;</a>", "out of range"},
      {"<a>&amp</a>", "unterminated entity"},
      {"<!DOCTYPE a [<!ENTITY x \"boom\">]><a>&x;</a>", "DTDs"},
      {"<a x=1></a>", "quoted value"},
      {"<a x=\"1></a>", "unterminated attribute"},
      {"<a></a><b></b>", "after the root element"},
      {"<a><!-- x</a>", "unterminated comment"},
      {"<a><![CDATA[x</a>", "unterminated CDATA"},
      {"<>", "expected a name"},
  };
  for (const auto& c : cases) {
    auto r = ParseXml(c.text);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
    EXPECT_NE(r.error().message.find(c.expect), std::string::npos) << c.text << " -> " << r.error().message;
    EXPECT_NE(r.error().message.find("at byte"), std::string::npos) << r.error().message;
  }
}

TEST(Xml, EnforcesDepthElementAndSizeLimits) {
  std::string deep;
  for (int i = 0; i < 100; ++i) deep += "<a>";
  for (int i = 0; i < 100; ++i) deep += "</a>";
  auto r = ParseXml(deep);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("nested deeper than 32"), std::string::npos);

  std::string wide = "<r>";
  for (int i = 0; i < 50; ++i) wide += "<x/>";
  wide += "</r>";
  XmlLimits limits;
  limits.max_elements = 10;
  r = ParseXml(wide, limits);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("more than 10 elements"), std::string::npos);

  limits = XmlLimits{};
  limits.max_bytes = 8;
  r = ParseXml("<a>0123456789</a>", limits);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("over the limit"), std::string::npos);
}

TEST(Xml, EscapeRoundTrips) {
  std::string text = "a<b>&\"c'";
  auto doc = ParseXml("<k>" + XmlEscape(text) + "</k>");
  ASSERT_TRUE(doc.ok());
  EXPECT_EQ(doc->text, text);
}

// Outside data: every file of the hostile corpus is either parsed or refused with a clear error, never a crash.
TEST(Xml, HostileCorpusGivesResultsOrClearErrors) {
  const char* env = std::getenv("IMGPIPE_CORPORA_DIR");
  std::filesystem::path dir = std::filesystem::path(env ? env : IMGPIPE_CORPORA_DIR) / "corrupt";
  ASSERT_TRUE(std::filesystem::is_directory(dir)) << dir << " missing; set IMGPIPE_CORPORA_DIR";
  size_t files = 0, refused = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file() || entry.file_size() > (4 << 20)) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    auto r = ParseXml(ss.str());
    ++files;
    if (!r.ok()) {
      ++refused;
      EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
      EXPECT_FALSE(r.error().message.empty());
    }
  }
  EXPECT_GT(files, 0u);
  EXPECT_GT(refused, 0u);  // images are not XML
}

}  // namespace
}  // namespace imgpipe
