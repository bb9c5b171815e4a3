// `imgpipe config check`: loads the config as `serve` would (file, IMGPIPE_* environment, flags) and says whether
// it is valid, without opening anything; for deploy pipelines and before a restart.
#include <iostream>

#include "cli/common.hpp"

namespace imgpipe {

int RunConfig(int argc, char** argv) {
  if (argc < 3 || std::string_view(argv[2]) != "check") {
    std::cerr << "usage: imgpipe config check [--config FILE] [--data-dir DIR]\n";
    return kExitUsage;
  }
  auto args = ParseArgs(argc, argv, 3, {"config", "data-dir"});
  if (!args) return kExitUsage;
  auto config = LoadConfigFromArgs(*args);  // prints the error, naming the key and where it came from
  if (!config) return kExitUsage;
  std::cout << "ok: " << args->Get("config").value_or("(no file)") << " with the IMGPIPE_* environment: storage "
            << config->blob_backend << ", database " << config->database_backend << ", queue "
            << config->queue_backend << "\n";
  return kExitOk;
}

}  // namespace imgpipe
