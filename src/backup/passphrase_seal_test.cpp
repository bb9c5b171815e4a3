#include "backup/passphrase_seal.hpp"

#include <gtest/gtest.h>

namespace imgpipe {
namespace {

TEST(PassphraseSealTest, OpensOnlyWithThePassphraseAndUnaltered) {
  const std::string secret = "{\"format\":1,\"keys\":\"very secret\"}";
  auto sealed = SealWithPassphrase(secret, "correct horse battery");
  ASSERT_TRUE(sealed.ok()) << sealed.error().message;
  EXPECT_EQ(sealed->find("very secret"), std::string::npos);
  EXPECT_EQ(OpenWithPassphrase(*sealed, "correct horse battery").value(), secret);

  auto wrong = OpenWithPassphrase(*sealed, "correct horse battery!");
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().kind, ErrorKind::kPermissionDenied);
  EXPECT_NE(wrong.error().message.find("passphrase is wrong"), std::string::npos);

  std::string altered = *sealed;
  size_t at = altered.find("\"sealed\":\"") + 20;
  altered[at] = altered[at] == '0' ? '1' : '0';
  EXPECT_EQ(OpenWithPassphrase(altered, "correct horse battery").error().kind, ErrorKind::kPermissionDenied);

  EXPECT_EQ(SealWithPassphrase(secret, "short").error().kind, ErrorKind::kInvalidArgument);
}

TEST(PassphraseSealTest, MalformedAndGreedyDocumentsAreRefusedBeforeAnyWork) {
  for (const char* doc : {"", "{}", "{\"format\":1,\"kdf\":\"pbkdf2\"}",
                          "{\"format\":1,\"kdf\":\"scrypt\",\"log_n\":40,\"r\":8,\"p\":1,\"salt\":\"00\",\"sealed\":\"00\"}",
                          "{\"format\":1,\"kdf\":\"scrypt\",\"log_n\":15,\"r\":8,\"p\":1,\"salt\":\"zz\",\"sealed\":\"00\"}",
                          "{\"format\":1,\"kdf\":\"scrypt\",\"log_n\":15,\"r\":8,\"p\":1,"
                          "\"salt\":\"00000000000000000000000000000000\",\"sealed\":\"00\"}"}) {
    auto r = OpenWithPassphrase(doc, "correct horse battery");
    ASSERT_FALSE(r.ok()) << doc;
    EXPECT_EQ(r.error().kind, ErrorKind::kIntegrity) << doc;
  }
}

}  // namespace
}  // namespace imgpipe
