// Strict validation alone: ValidateImageBuffer (what the intake runs on every upload and stream record before it
// stores anything) over a list of image files held in memory, on one thread. bench/kafka_ingest.py runs it over the
// files it produces, to set imgpipe's CPU per record beside what validation alone costs.
//
//   validate_bench LIST [REPS]     LIST: one file path a line; REPS: passes over the files (default 5)
//
// Prints one JSON line: images, passes, refused (per pass), microseconds of the process's CPU time per image (mean
// over all passes) and the mean per format (by the file name's extension). Set PER_FILE=1 for a line per file first.

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "processing/image_probe.hpp"

namespace {

struct Image {
  std::string path;
  std::string extension;
  std::string bytes;
  double seconds = 0;
};

// CPU time of the whole process (decoders may use threads of their own), not wall time: on a shared machine, time
// spent waiting for a core is not the decoder's.
double ThreadCpuSeconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: validate_bench LIST [REPS]\n");
    return 2;
  }
  const int reps = argc > 2 ? std::max(1, std::atoi(argv[2])) : 5;
  imgpipe::InitVips(1);

  std::vector<Image> images;
  std::ifstream list(argv[1]);
  for (std::string line; std::getline(list, line);) {
    if (line.empty()) continue;
    std::ifstream file(line, std::ios::binary);
    if (!file) {
      std::fprintf(stderr, "validate_bench: cannot read %s\n", line.c_str());
      return 1;
    }
    Image image{line, "", std::string(std::istreambuf_iterator<char>(file), {})};
    const auto dot = line.rfind('.');
    if (dot != std::string::npos) image.extension = line.substr(dot + 1);
    for (char& c : image.extension) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    images.push_back(std::move(image));
  }
  if (images.empty()) {
    std::fprintf(stderr, "validate_bench: %s lists no files\n", argv[1]);
    return 1;
  }

  const imgpipe::ImageLimits limits;
  int refused = 0;
  for (int r = 0; r < reps; ++r) {
    for (Image& image : images) {
      const double start = ThreadCpuSeconds();
      const bool ok = imgpipe::ValidateImageBuffer(image.bytes, limits).ok();
      image.seconds += ThreadCpuSeconds() - start;
      if (!ok) ++refused;
    }
  }

  double total = 0;
  std::map<std::string, std::pair<double, int>> by_format;
  for (const Image& image : images) {
    total += image.seconds;
    auto& [seconds, count] = by_format[image.extension];
    seconds += image.seconds;
    ++count;
    if (std::getenv("PER_FILE") != nullptr) {
      std::printf("%.1f us %zu bytes %s\n", image.seconds * 1e6 / reps, image.bytes.size(), image.path.c_str());
    }
  }
  std::printf("{\"images\": %zu, \"passes\": %d, \"refused\": %d, \"us_per_image\": %.1f, \"us_per_image_by_format\": {",
              images.size(), reps, refused / reps, total * 1e6 / (static_cast<double>(images.size()) * reps));
  const char* separator = "";
  for (const auto& [extension, entry] : by_format) {
    std::printf("%s\"%s\": [%d, %.1f]", separator, extension.c_str(), entry.second, entry.first * 1e6 / (entry.second * reps));
    separator = ", ";
  }
  std::printf("}}\n");
  return 0;
}
