#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "audit/audit_log.hpp"
#include "config/config.hpp"
#include "core/clock.hpp"
#include "crypto/encrypted_blob_store.hpp"
#include "crypto/key_provider.hpp"
#include "storage/blob_store.hpp"
#include "warehouse/metadata_store.hpp"
#include "warehouse/postgres/postgres_database.hpp"
#include "warehouse/sqlite/sqlite_database.hpp"

namespace imgpipe {


//! Exit codes of every subcommand.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;  //!< bad flags or config

//! Command-line arguments of one subcommand: "--name value" / "--name=value" options and positional arguments.
//! Options not in `known` are refused (a typo must not be ignored).
struct Args {
  std::map<std::string, std::string> options;
  std::vector<std::string> positional;

  std::optional<std::string> Get(const std::string& name) const {
    auto it = options.find(name);
    if (it == options.end()) return std::nullopt;
    return it->second;
  }
};
//! Parses argv[first..]; on a bad flag prints the problem and returns nullopt. `flags` are options without values.
std::optional<Args> ParseArgs(int argc, char** argv, int first, const std::vector<std::string>& known,
                              const std::vector<std::string>& flags = {});

//! Loads the config from --config, IMGPIPE_* and the given flags (--listen, --data-dir); prints the error and
//! returns nullopt on a bad config (the caller exits with kExitUsage).
std::optional<Config> LoadConfigFromArgs(const Args& args);

//! The configured warehouse, migrated: SQLite in the data folder (`db`), or PostgreSQL at database.url (`pg`) when
//! database.backend = "postgres"; the other pointer is null. The job queue lives in the same database.
//! Lifetimes: members are destroyed in reverse order, so the store goes before the database it uses.
struct Warehouse {
  std::unique_ptr<SqliteDatabase> db;
  std::unique_ptr<PostgresDatabase> pg;
  std::unique_ptr<MetadataStore> store;
};
//! `migrate` false: opened as it is (for `imgpipe migrate --check` and `imgpipe doctor`).
Result<Warehouse> OpenWarehouse(const Config& config, const Clock& clock, bool migrate = true);

//! The configured blob store: the local folder (storage.backend = "local"), Azure Blob Storage or an S3 bucket.
//! With storage.s3.lifecycle, `install_lifecycle` makes it install the bucket's lifecycle rule first.
Result<std::unique_ptr<BlobStore>> OpenBlobStore(const Config& config, bool install_lifecycle = false);
//! The audit log in <data_dir>/audit, or nullptr when audit.enabled is false.
Result<std::unique_ptr<AuditLog>> OpenAudit(const Config& config, const Clock& clock);
//! Records an action done from the command line (actor "cli", no address). A failure is reported on stderr: the
//! action itself already happened.
void AuditCli(AuditLog* audit, const Clock& clock, std::string action, std::string target, bool ok,
              boost::json::object details = {});
//! The configured blob store (OpenBlobStore), encrypted when encryption.enabled (docs/ENCRYPTION.md): `backend` is where the bytes go,
//! `keys` the key provider, `encrypted` the decorator every caller must use. store() is what to hand to the rest of
//! imgpipe. Lifetimes: members are destroyed in reverse order, so the decorator goes before what it uses.
struct BlobStack {
  std::unique_ptr<BlobStore> backend;
  std::unique_ptr<KeyProvider> keys;
  std::unique_ptr<EncryptedBlobStore> encrypted;
  BlobStore& store() { return encrypted ? static_cast<BlobStore&>(*encrypted) : *backend; }
};
//! `wait_for_keys`: when the key provider cannot be reached now, fail (commands) or, when false (serve), start
//! anyway: writes then fail with 503 and /readyz says why until the provider is back. A keyring that exists but is
//! broken fails either way. `clock` must outlive the stack.
Result<BlobStack> OpenBlobStack(const Config& config, const Clock& clock, bool wait_for_keys,
                                bool install_lifecycle = false);
//! The configured key provider (encryption.provider); see OpenBlobStack for `wait_for_keys`.
Result<std::unique_ptr<KeyProvider>> OpenKeyProvider(const Config& config, const Clock& clock, bool wait_for_keys);
std::string KeyringPath(const Config& config);
//! A name for this process in leases and logs: "<role>-<host>-<pid>" (in Kubernetes the host is the pod's name).
std::string LeaseOwner(const std::string& role);

std::string DatabasePath(const Config& config);
std::string BlobRoot(const Config& config);
std::string SpoolDir(const Config& config);

int RunServe(int argc, char** argv);
int RunIngest(int argc, char** argv);
int RunGateway(int argc, char** argv);
int RunWorker(int argc, char** argv);
int RunKeys(int argc, char** argv);
int RunQuery(int argc, char** argv);
int RunRetention(int argc, char** argv);
int RunProcess(int argc, char** argv);
int RunScripts(int argc, char** argv);
int RunReprocess(int argc, char** argv);
int RunHold(int argc, char** argv);
int RunStorage(int argc, char** argv);
int RunAudit(int argc, char** argv);
int RunConfig(int argc, char** argv);
int RunKek(int argc, char** argv);
int RunMigrate(int argc, char** argv);

}  // namespace imgpipe
