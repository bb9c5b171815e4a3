// `imgpipe process FILE...`: the default pipeline on local files, for previews and the processing benchmark.
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "cli/common.hpp"
#include "processing/image_probe.hpp"
#include "processing/pipeline.hpp"

namespace imgpipe {

int RunProcess(int argc, char** argv) {
  auto args = ParseArgs(argc, argv, 2, {"config", "threads", "out", "repeat", "vips-concurrency"});
  if (!args) return kExitUsage;
  if (args->positional.empty()) {
    std::cerr << "usage: imgpipe process [--threads N] [--out DIR] [--repeat R] FILE...\n";
    return kExitUsage;
  }
  auto config = LoadConfigFromArgs(*args);
  if (!config) return kExitUsage;
  int threads = std::max(1, std::atoi(args->Get("threads").value_or("1").c_str()));
  int repeat = std::max(1, std::atoi(args->Get("repeat").value_or("1").c_str()));
  int vips_threads = std::atoi(args->Get("vips-concurrency").value_or(std::to_string(config->vips_concurrency)).c_str());
  std::string out_dir = args->Get("out").value_or("");
  if (!out_dir.empty()) std::filesystem::create_directories(out_dir);
  InitVips(std::max(1, vips_threads));

  const auto& files = args->positional;
  std::atomic<size_t> next{0};
  std::atomic<int> ok{0}, failed{0};
  size_t total = files.size() * static_cast<size_t>(repeat);
  auto started = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (size_t i = next++; i < total; i = next++) {
        const std::string& file = files[i % files.size()];
        auto out = RunDefaultPipeline(file, config->renditions);
        if (!out.ok()) {
          ++failed;
          std::cerr << file << ": " << out.error().message << "\n";
          continue;
        }
        ++ok;
        if (!out_dir.empty() && i < files.size()) {
          std::string stem = std::filesystem::path(file).stem().string();
          for (const auto& r : out->renditions) {
            std::ofstream(out_dir + "/" + stem + "." + r.name + "." + r.extension, std::ios::binary) << r.bytes;
          }
        }
      }
    });
  }
  for (auto& t : pool) t.join();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::cout << "{\"files\": " << total << ", \"ok\": " << ok << ", \"failed\": " << failed
            << ", \"seconds\": " << seconds << ", \"images_per_second\": " << (seconds > 0 ? ok / seconds : 0)
            << "}\n";
  return failed == 0 ? kExitOk : kExitFailure;
}

}  // namespace imgpipe
