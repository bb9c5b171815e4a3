// The audit log's reader and chain check over arbitrary files: `imgpipe audit verify` reads what anyone with access
// to the folder may have written. Each input is split into lines as a day file would be.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "audit/audit_log.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<imgpipe::AuditLine> lines;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    lines.push_back({"fuzz:" + std::to_string(lines.size() + 1), text.substr(start, end - start)});
    start = end + 1;
  }
  auto report = imgpipe::VerifyAuditLines(lines);
  if (report.records < 0 || static_cast<size_t>(report.records) > lines.size()) __builtin_trap();
  return 0;
}
