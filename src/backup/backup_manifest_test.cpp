#include "backup/backup_manifest.hpp"

#include <gtest/gtest.h>

namespace imgpipe {
namespace {

BackupManifest Sample() {
  BackupManifest m;
  m.created = "2026-11-26T05:00:00.000Z";
  m.imgpipe_version = "0.1.0";
  m.database_backend = "sqlite";
  m.has_database = true;
  m.database_sha256 = std::string(64, 'a');
  m.database_bytes = 4096;
  m.schema_version = 9;
  m.has_keyring = true;
  m.blob_backend = "local";
  m.blobs_included = true;
  m.blobs.push_back({"originals", "2026/11/26/01KAYKNPDGG1XG5S6SRJRV5TT4/original", 123, std::string(64, 'b')});
  return m;
}

std::string ErrorOf(std::string text) {
  auto r = ParseBackupManifest(text);
  if (r.ok()) return "ok";
  EXPECT_EQ(r.error().kind, ErrorKind::kIntegrity);
  return r.error().message;
}

std::string With(std::string from, std::string to) {
  std::string text = SerializeBackupManifest(Sample());
  auto at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return text.replace(at, from.size(), to);
}

TEST(BackupManifestTest, RoundTrips) {
  auto m = ParseBackupManifest(SerializeBackupManifest(Sample()));
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(m->schema_version, 9);
  ASSERT_EQ(m->blobs.size(), 1u);
  EXPECT_EQ(m->blobs[0].key, "2026/11/26/01KAYKNPDGG1XG5S6SRJRV5TT4/original");
  EXPECT_EQ(m->blobs[0].bytes, 123u);
}

TEST(BackupManifestTest, HostileManifestsAreRefusedNamingTheField) {
  EXPECT_NE(ErrorOf("").find("not JSON"), std::string::npos);
  EXPECT_NE(ErrorOf("[]").find("not a JSON object"), std::string::npos);
  EXPECT_NE(ErrorOf(With("\"format\":1", "\"format\":2")).find("\"format\" is not 1"), std::string::npos);
  EXPECT_NE(ErrorOf(With("01KAYKNPDGG1XG5S6SRJRV5TT4/original", "../../../etc/passwd")).find("blob 0: "),
            std::string::npos);
  EXPECT_NE(ErrorOf(With("\"container\":\"originals\"", "\"container\":\"..\"")).find("is not one imgpipe writes"),
            std::string::npos);
  EXPECT_NE(ErrorOf(With("\"bytes\":123", "\"bytes\":-1")).find("\"bytes\" is not a non-negative integer"),
            std::string::npos);
  EXPECT_NE(ErrorOf(With(std::string(64, 'b'), "BB")).find("not a SHA-256 digest"), std::string::npos);
  EXPECT_NE(ErrorOf(With("\"blob_backend\":\"local\"", "\"blob_backend\":\"ftp\"")).find("blob_backend"),
            std::string::npos);
  EXPECT_NE(ErrorOf(With("\"has_keyring\":true", "\"has_keyring\":\"yes\"")).find("has_keyring"), std::string::npos);
}

}  // namespace
}  // namespace imgpipe
