#include "cli/common.hpp"

#include <algorithm>
#include <iostream>

#include <unistd.h>

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
    o.create_only = config.s3_create_only;
    o.http.ca_file = config.storage_ca_file;
    IMGPIPE_ASSIGN_OR_RETURN(auto store, S3BlobStore::Open(std::move(o)));
    if (install_lifecycle && config.s3_lifecycle) {
      IMGPIPE_TRY(store->PutLifecycle(
          S3RetentionLifecycleRules(config.retention_originals, config.retention_renditions)));
    }
    return std::unique_ptr<BlobStore>(std::move(store));
  }
  IMGPIPE_ASSIGN_OR_RETURN(auto store, LocalBlobStore::Open(BlobRoot(config)));
  return std::unique_ptr<BlobStore>(std::move(store));
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
                                bool install_lifecycle) {
  BlobStack stack;
  IMGPIPE_ASSIGN_OR_RETURN(stack.backend, OpenBlobStore(config, install_lifecycle));
  if (!config.encryption_enabled) return stack;
  IMGPIPE_ASSIGN_OR_RETURN(stack.keys, OpenKeyProvider(config, clock, wait_for_keys));
  EncryptedBlobStore::Options options;
  options.key_cache_age = config.key_cache_age;
  stack.encrypted = std::make_unique<EncryptedBlobStore>(*stack.backend, *stack.keys, clock, options);
  return stack;
}

Result<Warehouse> OpenWarehouse(const Config& config, const Clock& clock, bool migrate) {
  Warehouse w;
  if (config.database_backend == "postgres") {
    PostgresDatabase::Options options;
    options.url = config.database_url;
    options.pool_size = static_cast<size_t>(config.database_pool_size);
    IMGPIPE_ASSIGN_OR_RETURN(w.pg, PostgresDatabase::Open(options));
    w.store = std::make_unique<PostgresMetadataStore>(*w.pg, clock);
  } else {
    IMGPIPE_ASSIGN_OR_RETURN(w.db, SqliteDatabase::Open(DatabasePath(config)));
    w.store = std::make_unique<SqliteMetadataStore>(*w.db, clock);
  }
  if (migrate) IMGPIPE_TRY(w.store->Migrate());
  return w;
}

}  // namespace imgpipe
