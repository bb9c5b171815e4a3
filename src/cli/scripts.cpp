// `imgpipe scripts push NAME DIR | list | show NAME | rollback NAME`: processing scripts in blob storage
// (docs/SCRIPTS.md); `scripts run DIR FILE...` runs a script folder over local files (for trying a script before
// pushing it, and for the scripts benchmark). Wiring only: the work is in src/scripts/.
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>
#include <iostream>
#include <sstream>

#include "cli/common.hpp"
#include "processing/image_probe.hpp"
#include "scripts/script_runner.hpp"
#include "scripts/script_store.hpp"

namespace imgpipe {

namespace {

constexpr const char* kUsage =
    "usage: imgpipe scripts push NAME DIR | list | show NAME | rollback NAME  [--config FILE] [--data-dir DIR]\n"
    "       imgpipe scripts run DIR FILE... [--threads N] [--repeat R] [--out DIR] [--config FILE]\n";

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

// Runs the folder's script over `files` (--repeat times) on --threads threads, as a worker would, without storing
// anything; prints {"files","ok","failed","rejected","labels","seconds","images_per_second"}.
int RunLocal(const Args& args, const Config& config) {
  const auto& pos = args.positional;
  auto files = ReadFolder(pos[1]);
  if (!files.ok()) {
    std::cerr << "imgpipe: " << files.error().message << "\n";
    return kExitUsage;
  }
  auto manifest = ValidateScriptFiles(*files);
  if (!manifest.ok()) {
    std::cerr << "imgpipe: " << manifest.error().message << "\n";
    return kExitUsage;
  }
  ScriptBundle bundle;
  bundle.name = std::filesystem::path(pos[1]).filename().string();
  bundle.version = "local";
  bundle.files = std::move(files).value();
  bundle.manifest = std::move(manifest).value();
  ScriptRunLimits limits;
  limits.exec = ExecSandboxOptionsFrom(config);
  const int threads = std::max(1, std::atoi(args.Get("threads").value_or("1").c_str()));
  const int repeat = std::max(1, std::atoi(args.Get("repeat").value_or("1").c_str()));
  const std::string out_dir = args.Get("out").value_or("");
  if (!out_dir.empty()) std::filesystem::create_directories(out_dir);
  InitVips(1);

  const std::vector<std::string> inputs(pos.begin() + 2, pos.end());
  const size_t total = inputs.size() * static_cast<size_t>(repeat);
  std::atomic<size_t> next{0}, labels{0};
  std::atomic<int> ok{0}, failed{0}, rejected{0};
  const auto started = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (size_t i = next++; i < total; i = next++) {
        const std::string& file = inputs[i % inputs.size()];
        auto out = RunScript(bundle, file, limits);
        if (!out.ok()) {
          ++failed;
          std::cerr << file << ": " << out.error().message << "\n";
          continue;
        }
        ++ok;
        labels += out->labels.size();
        if (out->rejected) ++rejected;
        if (!out_dir.empty() && i < inputs.size()) {
          const std::string stem = std::filesystem::path(file).stem().string();
          for (const auto& r : out->renditions) {
            std::ofstream(out_dir + "/" + stem + "." + r.name + "." + r.extension, std::ios::binary) << r.bytes;
          }
        }
      }
    });
  }
  for (auto& t : pool) t.join();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::cout << "{\"files\": " << total << ", \"ok\": " << ok << ", \"failed\": " << failed << ", \"rejected\": "
            << rejected << ", \"labels\": " << labels << ", \"seconds\": " << seconds
            << ", \"images_per_second\": " << (seconds > 0 ? ok / seconds : 0) << "}\n";
  return failed == 0 ? kExitOk : kExitFailure;
}

}  // namespace

int RunScripts(int argc, char** argv) {
  auto args = ParseArgs(argc, argv, 2, {"config", "data-dir", "threads", "repeat", "out"});
  if (!args) return kExitUsage;
  const auto& pos = args->positional;
  const std::string verb = pos.empty() ? "" : pos[0];
  const bool shape_ok = (verb == "push" && pos.size() == 3) || (verb == "list" && pos.size() == 1) ||
                        ((verb == "show" || verb == "rollback") && pos.size() == 2) ||
                        (verb == "run" && pos.size() >= 3);
  if (!shape_ok) {
    std::cerr << kUsage;
    return kExitUsage;
  }
  auto config = LoadConfigFromArgs(*args);
  if (!config) return kExitUsage;
  if (verb == "run") return RunLocal(*args, *config);
  SystemClock clock;
  auto blobs = OpenBlobStack(*config, clock, /*wait_for_keys=*/true);
  if (!blobs.ok()) {
    std::cerr << "imgpipe: cannot open blob storage: " << blobs.error().message << "\n";
    return kExitFailure;
  }
  ScriptStore store(blobs->store(), clock, ExecSandboxOptionsFrom(*config));
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
