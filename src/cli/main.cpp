// imgpipe: one binary, roles by subcommand. This file only dispatches.
#include <cstring>
#include <iostream>
#include <string_view>

#include "cli/common.hpp"

namespace {

void Usage(std::ostream& out) {
  out << "usage: imgpipe <command> [options]\n"
         "\n"
         "commands:\n"
         "  serve      run everything in one process: HTTP API, workers, retention (embedded defaults)\n"
         "  ingest     consume the Kafka ingest topics only (ingest.topics; serve does it too when they are set)\n"
         "  gateway    the HTTP API and the job producer only: no workers, no sweeper (scale-out)\n"
         "  worker     processing workers only (with queue.backend = \"kafka\": a consumer group member); HTTP for\n"
         "             /livez, /readyz and /metrics; drains on SIGTERM\n"
         "  keys       create | list | revoke API keys\n"
         "  kek        list | usage | rotate | rewrap | retire key-encryption keys (encryption at rest)\n"
         "  db         encrypt | backup the SQLite warehouse (encrypted with SQLCipher by default)\n"
         "  query      run read-only SQL on the warehouse\n"
         "  retention  run   one retention sweep now\n"
         "  process    run the default pipeline on local files (preview, benchmark)\n"
         "  scripts    push | list | show | rollback processing scripts (docs/SCRIPTS.md)\n"
         "  reprocess  queue stored images again for a script: --script NAME --since TIME\n"
         "  hold       set | release | list legal holds (kept past retention until released)\n"
         "  storage    check | list | install-lifecycle | show-lifecycle: the blob store (local, azure, s3)\n"
         "  audit      verify | list the hash-chained audit log of authenticated actions\n"
         "  config     check: load the config (file, environment, flags) and report whether it is valid\n"
         "  backup     --to DIR: a consistent copy while serving (warehouse, sealed keyring, config, blob manifest)\n"
         "  restore    --from DIR: a backup into an empty data folder, every digest checked first\n"
         "  doctor     check config, data folder, disk, database, blob store and lifecycle, keys, clocks, Kafka\n"
         "  migrate    apply the warehouse's schema migrations now (--check: only report the versions)\n"
         "  version    print the version\n"
         "\n"
         "common options: --config FILE, --data-dir DIR; every config key can also be set with IMGPIPE_<SECTION>_<KEY>.\n"
         "See docs/OPERATIONS.md.\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    Usage(std::cerr);
    return imgpipe::kExitUsage;
  }
  std::string_view cmd = argv[1];
  if (cmd == "serve") return imgpipe::RunServe(argc, argv);
  if (cmd == "ingest") return imgpipe::RunIngest(argc, argv);
  if (cmd == "gateway") return imgpipe::RunGateway(argc, argv);
  if (cmd == "worker") return imgpipe::RunWorker(argc, argv);
  if (cmd == "keys") return imgpipe::RunKeys(argc, argv);
  if (cmd == "kek") return imgpipe::RunKek(argc, argv);
  if (cmd == "db") return imgpipe::RunDb(argc, argv);
  if (cmd == "query") return imgpipe::RunQuery(argc, argv);
  if (cmd == "retention") return imgpipe::RunRetention(argc, argv);
  if (cmd == "process") return imgpipe::RunProcess(argc, argv);
  if (cmd == "scripts") return imgpipe::RunScripts(argc, argv);
  if (cmd == "reprocess") return imgpipe::RunReprocess(argc, argv);
  if (cmd == "hold") return imgpipe::RunHold(argc, argv);
  if (cmd == "storage") return imgpipe::RunStorage(argc, argv);
  if (cmd == "audit") return imgpipe::RunAudit(argc, argv);
  if (cmd == "config") return imgpipe::RunConfig(argc, argv);
  if (cmd == "migrate") return imgpipe::RunMigrate(argc, argv);
  if (cmd == "backup") return imgpipe::RunBackup(argc, argv);
  if (cmd == "doctor") return imgpipe::RunDoctor(argc, argv);
  if (cmd == "restore") return imgpipe::RunRestore(argc, argv);
  if (cmd == "version" || cmd == "--version") {
    std::cout << "imgpipe " << IMGPIPE_VERSION << "\n";
    return 0;
  }
  if (cmd == "help" || cmd == "--help" || cmd == "-h") {
    Usage(std::cout);
    return 0;
  }
  std::cerr << "imgpipe: unknown command \"" << cmd << "\"\n\n";
  Usage(std::cerr);
  return imgpipe::kExitUsage;
}
