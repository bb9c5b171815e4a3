#pragma once

#include <filesystem>
#include <functional>
#include <string>

#include "backup/backup_manifest.hpp"
#include "core/clock.hpp"
#include "core/result.hpp"
#include "storage/blob_store.hpp"

namespace imgpipe {

struct BackupOptions {
  std::filesystem::path to;           //!< a folder that does not exist yet or is empty
  //! Writes a consistent copy of the SQLite warehouse to the path it is given (SqliteDatabase::BackupTo: SQLite's
  //! online backup, encrypted like the original); empty with PostgreSQL (pg_dump it).
  std::function<Status(const std::filesystem::path&)> copy_database;
  std::filesystem::path database_key_path;  //!< the encrypted warehouse's key file; empty when it is plaintext
  std::string database_backend;       //!< "sqlite" or "postgres"
  int schema_version = 0;
  std::filesystem::path keyring_path;  //!< the local keyring; empty when keys are in an HSM or encryption is off
  std::filesystem::path config_path;   //!< the config file; empty when there is none
  std::string passphrase;              //!< seals the keyring; needed when keyring_path is set
  std::string imgpipe_version;
  TimePoint now;
};

//! Writes a backup while imgpipe keeps serving: first the SQLite warehouse (`copy_database`: one consistent
//! snapshot) and its key file, then every object of `stored` (the backend as stored, so ciphertext when encryption is on)
//! with its size and SHA-256 (blobs are written before the rows that name them and never changed, so every row of the
//! snapshot finds its blobs; an object deleted meanwhile by retention is left out), copied into the backup when
//! `stored` is the local store, then the sealed keyring, the config and last manifest.json (a folder without it is
//! an unfinished backup). kInvalidArgument if `to` is not empty.
Result<BackupManifest> CreateBackup(const BackupOptions& options, BlobStore& stored);

//! Reads `from`'s manifest and checks the size and SHA-256 of every file it names (database, config, each blob when
//! included) before anything is restored. kIntegrity naming the first file that is missing or does not match.
Result<BackupManifest> VerifyBackup(const std::filesystem::path& from);

struct RestoreTarget {
  std::filesystem::path sqlite_path;   //!< where the warehouse goes (with a "sqlite" backup); its key file beside it
  std::filesystem::path keyring_path;  //!< where the keyring goes (with a sealed keyring)
  std::filesystem::path config_path;   //!< where the config goes (with a config); empty: not restored
  std::string passphrase;
};

//! Restores a backup VerifyBackup accepted. The keyring is opened first, so a wrong passphrase
//! (kPermissionDenied) writes nothing; then the warehouse, the keyring (mode 0600), the config and the blobs into
//! `blobs` (the local store's backend; nullptr when the backup holds no objects). Refuses (kConflict) to replace an
//! existing warehouse or keyring file.
Status RestoreBackup(const std::filesystem::path& from, const BackupManifest& manifest, const RestoreTarget& target,
                     BlobStore* blobs);

}  // namespace imgpipe
