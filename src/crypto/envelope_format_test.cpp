#include "crypto/envelope_format.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <string>

namespace imgpipe {
namespace {

EnvelopeHeader SampleHeader() {
  EnvelopeHeader h;
  for (size_t i = 0; i < h.nonce_prefix.size(); ++i) h.nonce_prefix[i] = static_cast<unsigned char>(i + 1);
  h.wrapped.key_id = "local-0011223344556677";
  h.wrapped.version = 7;
  h.wrapped.bytes = std::string(60, '\x5a');
  return h;
}

TEST(EnvelopeFormat, HeaderRoundTrip) {
  auto bytes = SerializeHeader(SampleHeader());
  ASSERT_TRUE(bytes.ok()) << bytes.error().message;
  ASSERT_EQ(bytes->size(), kHeaderBytes);
  EXPECT_TRUE(HasEnvelopeMagic(*bytes));
  auto parsed = ParseHeader(*bytes);
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  EXPECT_EQ(parsed->wrapped.key_id, "local-0011223344556677");
  EXPECT_EQ(parsed->wrapped.version, 7u);
  EXPECT_EQ(parsed->wrapped.bytes, std::string(60, '\x5a'));
  EXPECT_EQ(parsed->nonce_prefix, SampleHeader().nonce_prefix);
}

TEST(EnvelopeFormat, SerializeRefusesFieldsThatDoNotFit) {
  EnvelopeHeader h = SampleHeader();
  h.wrapped.key_id = std::string(33, 'a');
  EXPECT_FALSE(SerializeHeader(h).ok());
  h = SampleHeader();
  h.wrapped.key_id = "bad id";
  EXPECT_FALSE(SerializeHeader(h).ok());
  h = SampleHeader();
  h.wrapped.bytes = std::string(97, 'x');
  EXPECT_FALSE(SerializeHeader(h).ok());
  h = SampleHeader();
  h.wrapped.version = 0;
  EXPECT_FALSE(SerializeHeader(h).ok());
}

TEST(EnvelopeFormat, ParseRefusesEveryBadField) {
  const std::string good = *SerializeHeader(SampleHeader());
  auto refused = [](std::string bytes) {
    auto r = ParseHeader(bytes);
    return !r.ok() && r.error().kind == ErrorKind::kIntegrity;
  };
  EXPECT_TRUE(refused("\xff\xd8\xff\xe0 a JPEG"));          // legacy plaintext
  EXPECT_TRUE(refused(good.substr(0, kHeaderBytes - 1)));  // truncated
  EXPECT_TRUE(refused(""));
  struct Patch {
    size_t at;
    char value;
  };
  for (Patch p : {Patch{8, 2},      // format version
                  Patch{9, 17},     // segment size
                  Patch{10, 9},     // wrap algorithm
                  Patch{11, 0},     // wrapped key length 0
                  Patch{11, 97},    // over the field
                  Patch{12, 0},     // key id length 0
                  Patch{12, 33},    // over the field
                  Patch{13, 1},     // reserved
                  Patch{16 + 30, 'x'},  // key id padding
                  Patch{16, ' '},   // key id character
                  Patch{60, 1},     // reserved after the nonce prefix
                  Patch{159, 1}}) { // wrapped key padding
    std::string bad = good;
    bad[p.at] = p.value;
    EXPECT_TRUE(refused(bad)) << "byte " << p.at;
  }
  std::string zero_version = good;
  for (size_t i = 48; i < 52; ++i) zero_version[i] = 0;
  EXPECT_TRUE(refused(zero_version));
}

TEST(EnvelopeFormat, SizesMapBothWays) {
  for (uint64_t p : {uint64_t{0}, uint64_t{1}, kSegmentBytes - 1, kSegmentBytes, kSegmentBytes + 1, 2 * kSegmentBytes,
                     5 * kSegmentBytes + 12345, uint64_t{200} << 20}) {
    uint64_t c = CiphertextSize(p);
    auto back = PlaintextSize(c);
    ASSERT_TRUE(back.ok()) << p;
    EXPECT_EQ(*back, p);
  }
  EXPECT_EQ(CiphertextSize(0), kHeaderBytes + kTagBytes);
  EXPECT_EQ(CiphertextSize(kSegmentBytes), kHeaderBytes + kSealedSegmentBytes);
  EXPECT_EQ(SegmentCount(0), 1u);
  EXPECT_EQ(SegmentCount(kSegmentBytes), 1u);
  EXPECT_EQ(SegmentCount(kSegmentBytes + 1), 2u);
  // Sizes no object can have: shorter than header + tag, or a partial tag after full segments.
  for (uint64_t c : {uint64_t{0}, uint64_t{kHeaderBytes}, uint64_t{kHeaderBytes + kTagBytes - 1},
                     kHeaderBytes + kSealedSegmentBytes + 5,
                     // full segments then an empty one: a writer never ends so (fuzz_envelope found it)
                     kHeaderBytes + 8 * kSealedSegmentBytes + kTagBytes}) {
    auto r = PlaintextSize(c);
    EXPECT_FALSE(r.ok()) << c;
    if (!r.ok()) {
      EXPECT_EQ(r.error().kind, ErrorKind::kIntegrity);
    }
  }
}

// Each engine: the fast one where this machine has it (else OpenSSL twice), and OpenSSL.
class SegmentEngineTest : public testing::TestWithParam<SegmentCipher::Engine> {};

TEST_P(SegmentEngineTest, SegmentsOpenOnlyAtTheirPlace) {
  const SegmentCipher::Engine engine = GetParam();
  DataKey key = DataKey::Random();
  EnvelopeHeader h = SampleHeader();
  auto cipher = SegmentCipher::Create(key, h, "originals", "a/b", engine);
  ASSERT_TRUE(cipher.ok());
  std::string sealed;
  ASSERT_TRUE((*cipher)->Seal(3, false, "hello segment", &sealed).ok());
  ASSERT_EQ(sealed.size(), 13 + kTagBytes);
  EXPECT_EQ(sealed.find("hello"), std::string::npos);

  auto open = [&](SegmentCipher& c, uint64_t index, bool last) {
    std::string copy = sealed;
    auto r = c.Open(index, last, copy.data(), copy.size());
    return r.ok() ? copy.substr(0, *r) : std::string("<failed>");
  };
  EXPECT_EQ(open(**cipher, 3, false), "hello segment");
  EXPECT_EQ(open(**cipher, 4, false), "<failed>");  // moved
  EXPECT_EQ(open(**cipher, 3, true), "<failed>");   // taken for the end
  auto elsewhere = SegmentCipher::Create(key, h, "originals", "a/c", engine);
  EXPECT_EQ(open(**elsewhere, 3, false), "<failed>");  // another object, same key
  auto renditions = SegmentCipher::Create(key, h, "renditions", "a/b", engine);
  EXPECT_EQ(open(**renditions, 3, false), "<failed>");  // another container
  EnvelopeHeader other_prefix = h;
  other_prefix.nonce_prefix[0] ^= 1;
  auto prefixed = SegmentCipher::Create(key, other_prefix, "originals", "a/b", engine);
  EXPECT_EQ(open(**prefixed, 3, false), "<failed>");

  std::string flipped = sealed;
  flipped[0] ^= 0x01;
  auto r = (*cipher)->Open(3, false, flipped.data(), flipped.size());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kIntegrity);
  EXPECT_EQ(flipped.substr(0, 13), std::string(13, '\0'));  // unauthenticated bytes wiped

  std::string bad_tag = sealed;
  bad_tag.back() ^= 0x80;
  std::string out(13, 'x');
  r = (*cipher)->OpenTo(3, false, bad_tag.data(), bad_tag.size(), out.data());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(out, std::string(13, '\0'));
}

INSTANTIATE_TEST_SUITE_P(Engines, SegmentEngineTest,
                         testing::Values(SegmentCipher::Engine::kBest, SegmentCipher::Engine::kOpenSsl),
                         [](const testing::TestParamInfo<SegmentCipher::Engine>& info) {
                           return info.param == SegmentCipher::Engine::kBest ? std::string("Best")
                                                                             : std::string("OpenSsl");
                         });

TEST(EnvelopeFormat, BothEnginesSealTheSameBytesAndOpenEachOther) {
  std::printf("[ engine   ] fast AES-256-GCM engine on this machine: %s\n",
              SegmentCipher::HasFastEngine() ? "yes" : "no (OpenSSL only)");
  DataKey key = DataKey::Random();
  EnvelopeHeader h = SampleHeader();
  auto best = SegmentCipher::Create(key, h, "originals", "a/b", SegmentCipher::Engine::kBest);
  auto openssl = SegmentCipher::Create(key, h, "originals", "a/b", SegmentCipher::Engine::kOpenSsl);
  ASSERT_TRUE(best.ok() && openssl.ok());
  for (size_t size : {size_t{0}, size_t{1}, size_t{15}, size_t{16}, size_t{1000}, kSegmentBytes - 1, kSegmentBytes}) {
    SCOPED_TRACE("segment of " + std::to_string(size) + " bytes");
    std::string plain(size, '\0');
    for (size_t i = 0; i < size; ++i) plain[i] = static_cast<char>(i * 131 + 7);
    const bool last = size < kSegmentBytes;
    std::string a, b;
    ASSERT_TRUE((*best)->Seal(9, last, plain, &a).ok());
    ASSERT_TRUE((*openssl)->Seal(9, last, plain, &b).ok());
    EXPECT_EQ(a, b);  // same key, nonce and additional data: the same ciphertext and tag
    std::string out(size, 'x');
    auto opened = (*openssl)->OpenTo(9, last, a.data(), a.size(), out.data());
    ASSERT_TRUE(opened.ok()) << opened.error().message;
    EXPECT_EQ(out, plain);
    out.assign(size, 'x');
    opened = (*best)->OpenTo(9, last, b.data(), b.size(), out.data());
    ASSERT_TRUE(opened.ok()) << opened.error().message;
    EXPECT_EQ(out, plain);
    EXPECT_FALSE((*best)->OpenTo(9, !last, b.data(), b.size(), out.data()).ok());
  }
}


TEST(EnvelopeFormat, KeyWrapIsBoundToItsAdditionalData) {
  DataKey kek = DataKey::Random();
  auto sealed = AesGcmSeal(kek.data(), "aad-1", "0123456789abcdef0123456789abcdef");
  ASSERT_TRUE(sealed.ok());
  EXPECT_EQ(sealed->size(), 12 + 32 + kTagBytes);
  auto opened = AesGcmOpen(kek.data(), "aad-1", *sealed);
  ASSERT_TRUE(opened.ok());
  EXPECT_EQ(*opened, "0123456789abcdef0123456789abcdef");
  EXPECT_FALSE(AesGcmOpen(kek.data(), "aad-2", *sealed).ok());
  DataKey other = DataKey::Random();
  EXPECT_FALSE(AesGcmOpen(other.data(), "aad-1", *sealed).ok());
  EXPECT_FALSE(AesGcmOpen(kek.data(), "aad-1", sealed->substr(0, 20)).ok());
}

TEST(EnvelopeFormat, WrapAadNamesThePlace) {
  EnvelopeHeader h = SampleHeader();
  EXPECT_NE(WrapAad(h, "originals", "ab"), WrapAad(h, "originals", "ac"));
  EXPECT_NE(WrapAad(h, "originals", "ab"), WrapAad(h, "renditions", "ab"));
  EnvelopeHeader g = h;
  g.nonce_prefix[6] ^= 1;
  EXPECT_NE(WrapAad(h, "originals", "ab"), WrapAad(g, "originals", "ab"));
  // The KEK version and wrapped bytes are not bound: rewrapping changes them and must not break the segments.
  g = h;
  g.wrapped.version = 8;
  EXPECT_EQ(WrapAad(h, "originals", "ab"), WrapAad(g, "originals", "ab"));
}

}  // namespace
}  // namespace imgpipe
