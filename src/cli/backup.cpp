// `imgpipe backup --to DIR` and `imgpipe restore --from DIR` (docs/OPERATIONS.md, "Backup and restore"). Wiring only:
// the format and the work are in src/backup.
#include <termios.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>

#include "backup/backup.hpp"
#include "cli/common.hpp"
#include "crypto/database_key.hpp"
#include "storage/local/local_blob_store.hpp"

namespace imgpipe {

namespace fs = std::filesystem;

namespace {

// The passphrase never comes from argv (it would show in `ps` and shell history): a file, the environment, or the
// terminal, in that order.
std::optional<std::string> ReadPassphrase(const Args& args) {
  if (auto file = args.Get("passphrase-file")) {
    std::ifstream in(*file, std::ios::binary);
    if (!in) {
      std::cerr << "imgpipe: cannot read the passphrase file " << *file << "\n";
      return std::nullopt;
    }
    std::string text((std::istreambuf_iterator<char>(in)), {});
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
    return text;
  }
  if (const char* env = std::getenv("IMGPIPE_BACKUP_PASSPHRASE")) return std::string(env);
  if (!::isatty(STDIN_FILENO)) {
    std::cerr << "imgpipe: the keyring is sealed with a passphrase: give --passphrase-file FILE or "
                 "IMGPIPE_BACKUP_PASSPHRASE (never on the command line)\n";
    return std::nullopt;
  }
  std::cerr << "backup passphrase: " << std::flush;
  termios old_mode{};
  ::tcgetattr(STDIN_FILENO, &old_mode);
  termios quiet = old_mode;
  quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
  ::tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
  std::string line;
  std::getline(std::cin, line);
  ::tcsetattr(STDIN_FILENO, TCSANOW, &old_mode);
  std::cerr << "\n";
  return line;
}

bool UsesLocalKeyring(const Config& config) {
  return config.encryption_enabled && config.encryption_provider != "pkcs11";
}

// The options both commands take: `folder` (--to or --from) is required; nullopt after printing the usage.
struct Invocation {
  Args args;
  std::string folder;
  Config config;
};
std::optional<Invocation> ParseInvocation(int argc, char** argv, const std::string& folder_flag) {
  auto args = ParseArgs(argc, argv, 2, {"config", "data-dir", folder_flag, "passphrase-file"});
  if (!args) return std::nullopt;
  auto folder = args->Get(folder_flag);
  if (!folder) {
    std::cerr << "usage: imgpipe " << argv[1] << " --" << folder_flag
              << " DIR [--config FILE] [--data-dir DIR] [--passphrase-file FILE]\n";
    return std::nullopt;
  }
  auto config = LoadConfigFromArgs(*args);
  if (!config) return std::nullopt;
  return Invocation{std::move(*args), std::move(*folder), std::move(*config)};
}

}  // namespace

int RunBackup(int argc, char** argv) {
  auto inv = ParseInvocation(argc, argv, "to");
  if (!inv) return kExitUsage;
  const Args* args = &inv->args;
  const std::string* to = &inv->folder;
  const Config* config = &inv->config;
  SystemClock clock;
  BackupOptions o;
  o.to = *to;
  o.database_backend = config->database_backend == "postgres" ? "postgres" : "sqlite";
  o.imgpipe_version = IMGPIPE_VERSION;
  o.now = clock.Now();
  auto wh = OpenWarehouse(*config, clock, /*migrate=*/false);
  if (!wh.ok()) {
    std::cerr << "imgpipe: cannot open the warehouse: " << wh.error().message << "\n";
    return kExitFailure;
  }
  auto version = wh->store->SchemaVersion();
  if (!version.ok() || *version == 0) {
    std::cerr << "imgpipe: the warehouse has no schema yet (nothing to back up): "
              << (version.ok() ? "start imgpipe once" : version.error().message) << "\n";
    return kExitFailure;
  }
  o.schema_version = *version;
  if (wh->db) {
    SqliteDatabase* db = wh->db.get();
    o.copy_database = [db](const fs::path& dest) { return db->BackupTo(dest); };
    if (WarehouseEncrypted(*config)) o.database_key_path = DatabaseKeyPath(DatabasePath(*config));
  }
  if (UsesLocalKeyring(*config)) {
    o.keyring_path = KeyringPath(*config);
    auto passphrase = ReadPassphrase(*args);
    if (!passphrase) return kExitUsage;
    o.passphrase = *passphrase;
  }
  if (auto c = args->Get("config")) o.config_path = *c;
  auto blobs = OpenBlobStore(*config);
  if (!blobs.ok()) {
    std::cerr << "imgpipe: cannot open blob storage: " << blobs.error().message << "\n";
    return kExitFailure;
  }
  auto made = CreateBackup(o, **blobs);
  if (!made.ok()) {
    std::cerr << "imgpipe: backup failed: " << made.error().message << "\n";
    return kExitFailure;
  }
  uint64_t bytes = 0;
  for (const BackupBlob& b : made->blobs) bytes += b.bytes;
  std::cout << "{\"to\": \"" << o.to.string() << "\", \"database\": \"" << made->database_backend
            << "\", \"schema_version\": " << made->schema_version << ", \"blobs\": " << made->blobs.size()
            << ", \"blob_bytes\": " << bytes << ", \"blobs_included\": " << (made->blobs_included ? "true" : "false")
            << ", \"keyring\": " << (made->has_keyring ? "true" : "false") << "}\n";
  if (made->database_backend == "postgres") {
    std::cerr << "imgpipe: the warehouse is PostgreSQL: back it up with pg_dump (docs/OPERATIONS.md)\n";
  }
  if (!made->blobs_included) {
    std::cerr << "imgpipe: the blobs stay in the " << made->blob_backend << " store; the manifest lists them with "
              << "their digests. Copy them with the store's own tools (docs/OPERATIONS.md)\n";
  }
  return kExitOk;
}

int RunRestore(int argc, char** argv) {
  auto inv = ParseInvocation(argc, argv, "from");
  if (!inv) return kExitUsage;
  const Args* args = &inv->args;
  const std::string* from = &inv->folder;
  const Config* config = &inv->config;
  std::error_code ec;
  if (fs::exists(config->data_dir, ec) && !fs::is_empty(config->data_dir, ec)) {
    std::cerr << "imgpipe: the data folder " << config->data_dir << " is not empty; restore only into an empty one "
              << "(nothing was changed)\n";
    return kExitFailure;
  }
  auto manifest = VerifyBackup(*from);
  if (!manifest.ok()) {
    std::cerr << "imgpipe: cannot restore from " << *from << ": " << manifest.error().message << "\n";
    return kExitFailure;
  }
  const std::string backend = config->database_backend == "postgres" ? "postgres" : "sqlite";
  if (manifest->database_backend != backend) {
    std::cerr << "imgpipe: the backup's warehouse is " << manifest->database_backend << " but database.backend is "
              << backend << "; restore with the configuration it was made with\n";
    return kExitFailure;
  }
  if (manifest->blobs_included != (config->blob_backend == "local")) {
    std::cerr << "imgpipe: the backup's blobs were in the " << manifest->blob_backend
              << " store but storage.backend is " << config->blob_backend
              << "; restore with the configuration it was made with\n";
    return kExitFailure;
  }
  RestoreTarget target;
  target.sqlite_path = DatabasePath(*config);
  target.keyring_path = KeyringPath(*config);
  if (manifest->has_config) target.config_path = fs::path(config->data_dir) / "config.toml";
  if (manifest->has_keyring) {
    auto passphrase = ReadPassphrase(*args);
    if (!passphrase) return kExitUsage;
    target.passphrase = *passphrase;
  }
  fs::create_directories(config->data_dir, ec);
  fs::permissions(config->data_dir, fs::perms::owner_all, ec);
  std::unique_ptr<LocalBlobStore> local;
  if (manifest->blobs_included) {
    auto opened = LocalBlobStore::Open(BlobRoot(*config));
    if (!opened.ok()) {
      std::cerr << "imgpipe: cannot open the blob folder: " << opened.error().message << "\n";
      return kExitFailure;
    }
    local = std::move(opened).value();
  }
  if (Status s = RestoreBackup(*from, *manifest, target, local.get()); !s.ok()) {
    std::cerr << "imgpipe: restore failed: " << s.error().message << "\n";
    return kExitFailure;
  }
  std::cout << "{\"from\": \"" << *from << "\", \"data_dir\": \"" << config->data_dir << "\", \"blobs\": "
            << manifest->blobs.size() << ", \"schema_version\": " << manifest->schema_version << "}\n";
  if (manifest->has_config) {
    std::cerr << "imgpipe: the backed-up config is in " << target.config_path.string() << "; start with --config "
              << "pointing at it (or at your own)\n";
  }
  if (backend == "postgres") {
    std::cerr << "imgpipe: restore the PostgreSQL warehouse with pg_restore before starting (docs/OPERATIONS.md)\n";
  }
  return kExitOk;
}

}  // namespace imgpipe
