// `imgpipe migrate`: applies the warehouse's schema migrations, the first step of an upgrade (docs/OPERATIONS.md,
// "Upgrades"); `--check` only reports the versions.
#include <iostream>

#include "cli/common.hpp"

namespace imgpipe {

int RunMigrate(int argc, char** argv) {
  auto args = ParseArgs(argc, argv, 2, {"config", "data-dir"}, {"check"});
  if (!args) return kExitUsage;
  auto config = LoadConfigFromArgs(*args);
  if (!config) return kExitUsage;
  SystemClock clock;
  auto wh = OpenWarehouse(*config, clock, /*migrate=*/false);
  if (!wh.ok()) {
    std::cerr << "imgpipe: cannot open the warehouse: " << wh.error().message << "\n";
    return kExitFailure;
  }
  MetadataStore& store = *wh->store;
  auto before = store.SchemaVersion();
  if (!before.ok()) {
    std::cerr << "imgpipe: cannot read the schema version: " << before.error().message << "\n";
    return kExitFailure;
  }
  const int known = store.KnownSchemaVersion();
  const std::string backend(store.BackendName());
  if (args->Get("check")) {
    std::cout << "{\"backend\": \"" << backend << "\", \"schema_version\": " << *before
              << ", \"binary_knows\": " << known << ", \"pending\": " << std::max(0, known - *before) << "}\n";
    if (*before > known) {
      std::cerr << "imgpipe: the database has schema version " << *before << " but this imgpipe knows only up to "
                << known << "; run a newer imgpipe\n";
      return kExitFailure;
    }
    return kExitOk;
  }
  if (Status s = store.Migrate(); !s.ok()) {
    std::cerr << "imgpipe: migration failed: " << s.error().message << "\n";
    return kExitFailure;
  }
  std::cout << "{\"backend\": \"" << backend << "\", \"schema_version\": " << known
            << ", \"applied\": " << known - *before << "}\n";
  return kExitOk;
}

}  // namespace imgpipe
