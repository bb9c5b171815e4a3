#include "cli/common.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <iostream>

#include "core/log.hpp"
#include "crypto/database_key.hpp"
#include "crypto/local/local_key_provider.hpp"
#include "crypto/pkcs11/pkcs11_key_provider.hpp"
#include "storage/azure/azure_blob_store.hpp"
#include "storage/local/local_blob_store.hpp"
#include "storage/s3/s3_blob_store.hpp"
#include "warehouse/postgres/postgres_metadata_store.hpp"
#include "warehouse/sqlite/sqlite_database.hpp"
#include "warehouse/sqlite/sqlite_metadata_store.hpp"

namespace imgpipe {

std::optional<Args> ParseArgs(int argc, char** argv, int first, const std::vector<std::string>& known,
                              const std::vector<std::string>& flags) {
  Args args;
  for (int i = first; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--") {
      for (++i; i < argc; ++i) args.positional.emplace_back(argv[i]);
      break;
    }
    if (a.rfind("--", 0) != 0 || a.size() == 2) {
      args.positional.push_back(a);
      continue;
    }
    std::string name = a.substr(2);
    std::string value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    bool is_flag = std::find(flags.begin(), flags.end(), name) != flags.end();
    if (!is_flag && std::find(known.begin(), known.end(), name) == known.end()) {
      std::cerr << "imgpipe: unknown option --" << name << "\n";
      return std::nullopt;
    }
    if (is_flag) {
      args.options[name] = has_value ? value : "true";
      continue;
    }
    if (!has_value) {
      if (i + 1 >= argc) {
        std::cerr << "imgpipe: option --" << name << " needs a value\n";
        return std::nullopt;
      }
      value = argv[++i];
    }
    args.options[name] = value;
  }
  return args;
}

std::optional<VerbArgs> ParseVerbArgs(int argc, char** argv, const char* usage,
                                      const std::function<std::optional<size_t>(std::string_view)>& positional) {
  if (argc < 3) {
    std::cerr << usage;
    return std::nullopt;
  }
  VerbArgs out;
  out.verb = argv[2];
  auto args = ParseArgs(argc, argv, 3, {"config", "data-dir"});
  if (!args) return std::nullopt;
  const std::optional<size_t> want = positional(out.verb);
  if (!want) std::cerr << "imgpipe: unknown " << argv[1] << " command \"" << out.verb << "\"\n";
  if (!want || args->positional.size() != *want) {
    std::cerr << usage;
    return std::nullopt;
  }
  out.args = std::move(*args);
  return out;
}

std::optional<Config> LoadConfigFromArgs(const Args& args) {
  ConfigSources sources;
  if (auto c = args.Get("config")) sources.file_path = *c;
  sources.env = ImgpipeEnvironment();
  if (auto v = args.Get("listen")) sources.flags["server.listen"] = *v;
  if (auto v = args.Get("data-dir")) sources.flags["storage.data_dir"] = *v;
  auto config = LoadConfig(sources);
  if (!config.ok()) {
    std::cerr << "imgpipe: configuration error: " << config.error().message << "\n";
    return std::nullopt;
  }
  return std::move(config).value();
}

Result<std::unique_ptr<BlobStore>> OpenBlobStore(const Config& config, bool install_lifecycle) {
  if (config.blob_backend == "azure") {
    AzureBlobStoreOptions o;
    o.endpoint = config.azure_endpoint;
    o.account = config.azure_account;
    o.key = config.azure_key;
    o.sas = config.azure_sas;
    o.container_prefix = config.azure_container_prefix;
    o.http.ca_file = config.storage_ca_file;
    IMGPIPE_ASSIGN_OR_RETURN(auto store, AzureBlobStore::Open(std::move(o)));
    return std::unique_ptr<BlobStore>(std::move(store));
  }
  if (config.blob_backend == "s3") {
    S3BlobStoreOptions o;
    o.endpoint = config.s3_endpoint;
    o.region = config.s3_region;
    o.bucket = config.s3_bucket;
    o.access_key = config.s3_access_key;
    o.secret_key = config.s3_secret_key;
    o.addressing = config.s3_addressing == "virtual" ? S3Addressing::kVirtual : S3Addressing::kPath;
    o.http.connect_host = config.s3_connect_host;
    o.create_only = config.s3_create_only;
    o.http.ca_file = config.storage_ca_file;
    IMGPIPE_ASSIGN_OR_RETURN(auto store, S3BlobStore::Open(std::move(o)));
    if (install_lifecycle && config.s3_lifecycle) {
      const auto wanted = S3RetentionLifecycleRules(config.retention_originals, config.retention_renditions);
      IMGPIPE_TRY(store->PutLifecycle(wanted));
      // A server may accept rules and keep something else; say so at once rather than at the next doctor run.
      auto back = store->GetLifecycle();
      if (!back.ok()) {
        LogWarn("installed the bucket's lifecycle rules but cannot read them back",
                {{"bucket", config.s3_bucket}, {"error", back.error().message}});
      } else {
        for (const auto& finding : CompareS3Lifecycle(*back, wanted)) {
          LogWarn("the bucket's lifecycle rules as read back differ from retention",
                  {{"bucket", config.s3_bucket}, {"finding", finding.message}});
        }
      }
    }
    return std::unique_ptr<BlobStore>(std::move(store));
  }
  IMGPIPE_ASSIGN_OR_RETURN(auto store, LocalBlobStore::Open(BlobRoot(config)));
  return std::unique_ptr<BlobStore>(std::move(store));
}

bool LockDataDir(const std::string& dir, int* fd_out) {
  std::string path = dir + "/imgpipe.lock";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    return false;
  }
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) == 0) (void)!::write(fd, pid.data(), pid.size());
  *fd_out = fd;
  return true;
}

std::string DatabasePath(const Config& config) { return config.data_dir + "/imgpipe.db"; }
std::string BlobRoot(const Config& config) { return config.data_dir + "/blobs"; }
std::string SpoolDir(const Config& config) { return config.data_dir + "/spool"; }

Result<std::unique_ptr<AuditLog>> OpenAudit(const Config& config, const Clock& clock) {
  if (!config.audit_enabled) return std::unique_ptr<AuditLog>();
  return AuditLog::Open(config.data_dir + "/audit", clock);
}

void AuditCli(AuditLog* audit, const Clock& clock, std::string action, std::string target, bool ok,
              boost::json::object details) {
  if (!audit) return;
  AuditEvent e;
  e.at = clock.Now();
  e.actor = "cli";
  e.action = std::move(action);
  e.target = std::move(target);
  e.outcome = ok ? "ok" : "error";
  e.details = std::move(details);
  if (Status s = audit->Append(e); !s.ok()) {
    std::cerr << "imgpipe: warning: could not write the audit log: " << s.error().message << "\n";
  }
}

std::string KeyringPath(const Config& config) {
  return config.keyring_path.empty() ? config.data_dir + "/keyring.json" : config.keyring_path;
}

std::string LeaseOwner(const std::string& role) {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  return role + "-" + (host[0] ? host : "unknown") + "-" + std::to_string(::getpid());
}

Result<std::unique_ptr<KeyProvider>> OpenKeyProvider(const Config& config, const Clock& clock, bool wait_for_keys) {
  if (config.encryption_provider == "pkcs11") {
    Pkcs11KeyProvider::Options options;
    options.module = config.pkcs11_module;
    options.token_label = config.pkcs11_token;
    options.pin = config.pkcs11_pin;
    options.key_label = config.pkcs11_key_label;
    IMGPIPE_ASSIGN_OR_RETURN(auto p, Pkcs11KeyProvider::Open(std::move(options), clock, wait_for_keys));
    return std::unique_ptr<KeyProvider>(std::move(p));
  }
  IMGPIPE_ASSIGN_OR_RETURN(auto p, LocalKeyProvider::Open(KeyringPath(config), clock));
  return std::unique_ptr<KeyProvider>(std::move(p));
}

Result<BlobStack> OpenBlobStack(const Config& config, const Clock& clock, bool wait_for_keys,
                                bool install_lifecycle, KeyProvider* shared_keys) {
  BlobStack stack;
  IMGPIPE_ASSIGN_OR_RETURN(stack.backend, OpenBlobStore(config, install_lifecycle));
  if (!config.encryption_enabled) return stack;
  if (shared_keys != nullptr) {
    stack.provider = shared_keys;
  } else {
    IMGPIPE_ASSIGN_OR_RETURN(stack.keys, OpenKeyProvider(config, clock, wait_for_keys));
    stack.provider = stack.keys.get();
  }
  EncryptedBlobStore::Options options;
  options.key_cache_age = config.key_cache_age;
  stack.encrypted = std::make_unique<EncryptedBlobStore>(*stack.backend, *stack.provider, clock, options);
  return stack;
}

bool WarehouseEncrypted(const Config& config) {
  return config.database_backend == "sqlite" && config.database_encrypt && config.encryption_enabled;
}

Result<std::string> WarehouseKey(const Config& config, KeyProvider& keys, bool create) {
  const std::string sidecar = DatabaseKeyPath(DatabasePath(config));
  if (!create && !std::filesystem::exists(sidecar)) {
    return MakeError(ErrorKind::kNotFound, "the warehouse key file " + sidecar + " is missing, but the database " +
                                               DatabasePath(config) +
                                               " exists: restore the key file from the backup taken with it");
  }
  IMGPIPE_ASSIGN_OR_RETURN(DataKey raw, OpenDatabaseKey(keys, sidecar, create));
  return SqlcipherRawKey(raw);
}

Result<Warehouse> OpenWarehouse(const Config& config, const Clock& clock, bool migrate, KeyProvider* keys) {
  Warehouse w;
  if (config.database_backend == "postgres") {
    PostgresDatabase::Options options;
    options.url = config.database_url;
    options.pool_size = static_cast<size_t>(config.database_pool_size);
    IMGPIPE_ASSIGN_OR_RETURN(w.pg, PostgresDatabase::Open(options));
    w.store = std::make_unique<PostgresMetadataStore>(*w.pg, clock);
  } else {
    SqliteDatabase::Options options;
    if (WarehouseEncrypted(config)) {
      if (keys == nullptr) {
        IMGPIPE_ASSIGN_OR_RETURN(w.keys, OpenKeyProvider(config, clock, /*wait_for_keys=*/true));
        keys = w.keys.get();
      }
      // A new key only for a new database, or for a plaintext one (SqliteDatabase::Open then refuses it, naming
      // `imgpipe db encrypt`, which uses that key): an encrypted one without its key file is refused, never re-keyed.
      const std::string path = DatabasePath(config);
      const bool fresh = !std::filesystem::exists(path) || SqliteDatabase::IsPlaintextDatabase(path);
      IMGPIPE_ASSIGN_OR_RETURN(options.key, WarehouseKey(config, *keys, fresh));
    }
    IMGPIPE_ASSIGN_OR_RETURN(w.db, SqliteDatabase::Open(DatabasePath(config), std::move(options)));
    w.store = std::make_unique<SqliteMetadataStore>(*w.db, clock);
  }
  if (migrate) IMGPIPE_TRY(w.store->Migrate());
  return w;
}

}  // namespace imgpipe
