#pragma once

#include <functional>
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

//! A subcommand with verbs, `imgpipe <command> VERB [--config FILE] [--data-dir DIR] [ARG...]`: the verb and its
//! arguments. `positional(verb)` says how many ARGs the verb takes, nullopt for an unknown verb. Prints `usage` and
//! returns nullopt when the verb is missing or unknown or the count is wrong.
struct VerbArgs {
  std::string verb;
  Args args;
};
std::optional<VerbArgs> ParseVerbArgs(int argc, char** argv, const char* usage,
                                      const std::function<std::optional<size_t>(std::string_view)>& positional);

//! Loads the config from --config, IMGPIPE_* and the given flags (--listen, --data-dir); prints the error and
//! returns nullopt on a bad config (the caller exits with kExitUsage).
std::optional<Config> LoadConfigFromArgs(const Args& args);

//! The configured warehouse, migrated: SQLite in the data folder (`db`), or PostgreSQL at database.url (`pg`) when
//! database.backend = "postgres"; the other pointer is null. The job queue lives in the same database.
//! Lifetimes: members are destroyed in reverse order, so the store goes before the database it uses.
struct Warehouse {
  std::unique_ptr<KeyProvider> keys;  //!< the key provider OpenWarehouse opened itself for an encrypted database
  std::unique_ptr<SqliteDatabase> db;
  std::unique_ptr<PostgresDatabase> pg;
  std::unique_ptr<MetadataStore> store;
};
//! `migrate` false: opened as it is (for `imgpipe migrate --check` and `imgpipe doctor`).
//! The SQLite warehouse is encrypted when WarehouseEncrypted(config) (docs/ENCRYPTION.md, "The warehouse"): its key is
//! unwrapped through `keys` (the caller's key provider, shared with the blob stack) or, when null, through a
//! provider opened here. So the provider must be reachable when the warehouse opens; kUnavailable otherwise.
Result<Warehouse> OpenWarehouse(const Config& config, const Clock& clock, bool migrate = true,
                                KeyProvider* keys = nullptr);
//! SQLite backend with database.encrypt and encryption.enabled.
bool WarehouseEncrypted(const Config& config);
//! The SQLCipher key of the configured SQLite warehouse (the raw-key form), through `keys`; created (with its
//! sidecar file) on first use when `create`.
Result<std::string> WarehouseKey(const Config& config, KeyProvider& keys, bool create);

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
  KeyProvider* provider = nullptr;  //!< keys.get(), or the caller's shared provider; null without encryption
  BlobStore& store() { return encrypted ? static_cast<BlobStore&>(*encrypted) : *backend; }
};
//! `wait_for_keys`: when the key provider cannot be reached now, fail (commands) or, when false (serve), start
//! anyway: writes then fail with 503 and /readyz says why until the provider is back. A keyring that exists but is
//! broken fails either way. `clock` must outlive the stack.
//! `shared_keys`: use this key provider (owned by the caller, e.g. opened for the warehouse) instead of opening one;
//! `keys` stays null then.
Result<BlobStack> OpenBlobStack(const Config& config, const Clock& clock, bool wait_for_keys,
                                bool install_lifecycle = false, KeyProvider* shared_keys = nullptr);
//! The configured key provider (encryption.provider); see OpenBlobStack for `wait_for_keys`.
Result<std::unique_ptr<KeyProvider>> OpenKeyProvider(const Config& config, const Clock& clock, bool wait_for_keys);
//! Holds an exclusive lock on the data folder (<dir>/imgpipe.lock, flock) so two servers never share it (the
//! embedded queue and the spool assume one owner); false if another process holds it. Released when the process
//! exits, however it exits.
bool LockDataDir(const std::string& dir, int* fd_out);
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
int RunDb(int argc, char** argv);
int RunBackup(int argc, char** argv);
int RunRestore(int argc, char** argv);
int RunDoctor(int argc, char** argv);

}  // namespace imgpipe
