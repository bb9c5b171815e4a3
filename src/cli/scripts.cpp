// `imgpipe scripts push NAME DIR | list | show NAME | rollback NAME`: processing scripts in blob storage
// (docs/SCRIPTS.md). Wiring only: the work is in src/scripts/script_store.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli/common.hpp"
#include "scripts/script_store.hpp"

namespace imgpipe {

namespace {

constexpr const char* kUsage =
    "usage: imgpipe scripts push NAME DIR | list | show NAME | rollback NAME  [--config FILE] [--data-dir DIR]\n";

// Every regular file directly in `dir`; the store decides which are allowed.
Result<std::map<std::string, std::string>> ReadFolder(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return MakeError(ErrorKind::kInvalidArgument, dir + " is not a folder; push a folder holding pipeline.toml");
  }
  std::map<std::string, std::string> files;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_regular_file()) continue;
    if (entry.file_size() > ScriptStore::kMaxBytes) {
      return MakeError(ErrorKind::kInvalidArgument, entry.path().string() + " is larger than a script may be");
    }
    std::ifstream in(entry.path(), std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    files[entry.path().filename().string()] = text.str();
  }
  if (ec) return MakeError(ErrorKind::kInvalidArgument, "cannot read " + dir + ": " + ec.message());
  return files;
}

void PrintSummary(const ScriptSummary& s) {
  std::cout << s.name << "  " << s.current_version << "  " << s.history.size() << " version(s)"
            << (s.description.empty() ? "" : "  " + s.description) << "\n";
}

}  // namespace

int RunScripts(int argc, char** argv) {
  auto args = ParseArgs(argc, argv, 2, {"config", "data-dir"});
  if (!args) return kExitUsage;
  const auto& pos = args->positional;
  const std::string verb = pos.empty() ? "" : pos[0];
  const bool shape_ok = (verb == "push" && pos.size() == 3) || (verb == "list" && pos.size() == 1) ||
                        ((verb == "show" || verb == "rollback") && pos.size() == 2);
  if (!shape_ok) {
    std::cerr << kUsage;
    return kExitUsage;
  }
  auto config = LoadConfigFromArgs(*args);
  if (!config) return kExitUsage;
  auto blobs = OpenBlobStore(*config);
  if (!blobs.ok()) {
    std::cerr << "imgpipe: cannot open blob storage: " << blobs.error().message << "\n";
    return kExitFailure;
  }
  SystemClock clock;
  ScriptStore store(**blobs, clock, ExecSandboxOptionsFrom(*config));
  auto fail = [](const Error& e) {
    std::cerr << "imgpipe: " << e.message << "\n";
    return e.kind == ErrorKind::kInvalidArgument ? kExitUsage : kExitFailure;
  };
  if (verb == "push") {
    auto files = ReadFolder(pos[2]);
    if (!files.ok()) return fail(files.error());
    auto pushed = store.Push(pos[1], *files);
    if (!pushed.ok()) return fail(pushed.error());
    std::cout << pushed->name << " " << pushed->version << "\n";
    return kExitOk;
  }
  if (verb == "list") {
    auto list = store.List();
    if (!list.ok()) return fail(list.error());
    for (const ScriptSummary& s : *list) PrintSummary(s);
    return kExitOk;
  }
  auto summary = verb == "rollback" ? store.Rollback(pos[1]) : store.Show(pos[1]);
  if (!summary.ok()) return fail(summary.error());
  PrintSummary(*summary);
  if (verb == "show") {
    for (const std::string& v : summary->history) std::cout << "  " << v << "\n";
  }
  return kExitOk;
}

}  // namespace imgpipe
