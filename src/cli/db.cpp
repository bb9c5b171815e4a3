// `imgpipe db encrypt|backup`: the SQLite warehouse's file (docs/OPERATIONS.md, "The encrypted warehouse").
#include <iostream>

#include "cli/common.hpp"

namespace imgpipe {

namespace {

constexpr const char* kUsage =
    "usage: imgpipe db encrypt [--config FILE] [--data-dir DIR]   encrypt a plaintext warehouse in place (serve stopped)\n"
    "       imgpipe db backup FILE ...   a consistent copy of the warehouse, safe while serve runs; encrypted\n"
    "                                    warehouses stay encrypted (keep imgpipe.db.key and the keys with it)\n";

int Fail(const std::string& message) {
  std::cerr << "imgpipe: " << message << "\n";
  return kExitFailure;
}

int Encrypt(const Config& config) {
  if (!WarehouseEncrypted(config)) {
    std::cerr << "imgpipe: the warehouse is not configured to be encrypted (it needs database.backend = \"sqlite\", "
                 "database.encrypt = true and encryption.enabled = true)\n";
    return kExitUsage;
  }
  const std::string path = DatabasePath(config);
  if (!SqliteDatabase::IsPlaintextDatabase(path)) {
    return Fail("database " + path + " is not a plaintext SQLite database (already encrypted, or missing); nothing to do");
  }
  // The export reads the whole file and replaces it: no server may be writing meanwhile.
  int lock_fd = -1;
  if (!LockDataDir(config.data_dir, &lock_fd)) {
    return Fail("imgpipe serve is running on " + config.data_dir + "; stop it first, then run `imgpipe db encrypt`");
  }
  SystemClock clock;
  auto keys = OpenKeyProvider(config, clock, /*wait_for_keys=*/true);
  if (!keys.ok()) return Fail(keys.error().message);
  auto key = WarehouseKey(config, **keys, /*create=*/true);
  if (!key.ok()) return Fail(key.error().message);
  if (Status s = SqliteDatabase::EncryptInPlace(path, *key); !s.ok()) return Fail("encrypting failed: " + s.error().message);
  // Prove it opens under the key before saying so.
  auto wh = OpenWarehouse(config, clock, /*migrate=*/true, keys->get());
  if (!wh.ok()) return Fail("the encrypted database does not open: " + wh.error().message);
  auto audit = OpenAudit(config, clock);
  if (audit.ok()) AuditCli(audit->get(), clock, "db.encrypt", path, true);
  std::cerr << "encrypted " << path << " with the key in " << path
            << ".key (wrapped by the key provider). The old plaintext pages may still be on the disk's free blocks.\n";
  return kExitOk;
}

int Backup(const Config& config, const std::string& dest) {
  if (config.database_backend != "sqlite") {
    return Fail("database.backend is \"" + config.database_backend + "\": back it up with its own tools (pg_dump)");
  }
  SystemClock clock;
  auto wh = OpenWarehouse(config, clock);
  if (!wh.ok()) return Fail("cannot open the warehouse: " + wh.error().message);
  if (Status s = wh->db->BackupTo(dest); !s.ok()) return Fail(s.error().message);
  std::cerr << "backed up " << DatabasePath(config) << " to " << dest
            << (WarehouseEncrypted(config) ? " (encrypted with the same key: it opens with " + DatabasePath(config) +
                                                 ".key and the key provider)"
                                           : " (plaintext)")
            << "\n";
  return kExitOk;
}

}  // namespace

int RunDb(int argc, char** argv) {
  auto parsed = ParseVerbArgs(argc, argv, kUsage, [](std::string_view verb) -> std::optional<size_t> {
    if (verb == "encrypt") return 0;
    if (verb == "backup") return 1;
    return std::nullopt;
  });
  if (!parsed) return kExitUsage;
  auto config = LoadConfigFromArgs(parsed->args);
  if (!config) return kExitUsage;
  return parsed->verb == "encrypt" ? Encrypt(*config) : Backup(*config, parsed->args.positional[0]);
}

}  // namespace imgpipe
