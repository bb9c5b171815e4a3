#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"

namespace imgpipe {

//! One object of the blob store as it was stored (ciphertext when encryption is on).
struct BackupBlob {
  std::string container;  //!< originals, renditions or scripts
  std::string key;        //!< a valid blob key (ValidateBlobKey)
  uint64_t bytes = 0;
  std::string sha256;     //!< 64 lowercase hex digits of the stored bytes
};

//! What `imgpipe backup` wrote into its folder (manifest.json); `imgpipe restore` trusts nothing else in the folder.
//! File names are fixed (kBackupDatabaseFile...), so a manifest cannot point restore anywhere else.
struct BackupManifest {
  std::string created;            //!< RFC 3339
  std::string imgpipe_version;
  std::string database_backend;   //!< "sqlite" (the file is in the backup) or "postgres" (pg_dump it yourself)
  bool has_database = false;
  std::string database_sha256;
  uint64_t database_bytes = 0;
  int schema_version = 0;
  bool has_database_key = false;  //!< the encrypted warehouse's key file (wrapped by the key provider)
  std::string database_key_sha256;
  bool has_keyring = false;       //!< the local keyring, sealed with the passphrase (kBackupKeyringFile)
  bool has_config = false;        //!< the config file given to backup (kBackupConfigFile)
  std::string config_sha256;
  std::string blob_backend;       //!< local, azure or s3
  bool blobs_included = false;    //!< the objects are in blobs/<container>/<key> (local store); else digests only
  std::vector<BackupBlob> blobs;
};

inline constexpr std::string_view kBackupManifestFile = "manifest.json";
inline constexpr std::string_view kBackupDatabaseFile = "imgpipe.db";
inline constexpr std::string_view kBackupDatabaseKeyFile = "imgpipe.db.key";
inline constexpr std::string_view kBackupKeyringFile = "keyring.sealed";
inline constexpr std::string_view kBackupConfigFile = "config.toml";
inline constexpr std::string_view kBackupBlobsFolder = "blobs";

std::string SerializeBackupManifest(const BackupManifest& manifest);
//! Parses and checks a manifest read from disk: kIntegrity naming the first bad field (unknown format, a blob key
//! that is not a valid key, a container imgpipe does not write, a digest that is not 64 hex digits...). Any bytes are
//! safe input.
Result<BackupManifest> ParseBackupManifest(std::string_view text);

}  // namespace imgpipe
