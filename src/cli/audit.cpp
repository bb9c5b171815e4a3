// `imgpipe audit verify|list`: checks the audit log's hash chain (exit 1 naming every damaged line), and prints its
// records newest first. Reads the files only, so it works beside a running server and on a copied folder.
#include <boost/json/serialize.hpp>

#include <iostream>

#include "cli/common.hpp"

namespace imgpipe {

int RunAudit(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: imgpipe audit verify [--dir AUDIT_DIR | --data-dir DIR]\n"
                 "       imgpipe audit list [--since TIME] [--action ACTION] [--actor ID] [--limit N] [--data-dir DIR]\n";
    return kExitUsage;
  }
  std::string sub = argv[2];
  auto args = ParseArgs(argc, argv, 3, {"config", "data-dir", "dir", "since", "action", "actor", "limit"});
  if (!args) return kExitUsage;
  auto config = LoadConfigFromArgs(*args);
  if (!config) return kExitUsage;
  const std::string dir = args->Get("dir").value_or(config->data_dir + "/audit");
  if (sub == "verify") {
    auto report = AuditLog::Verify(dir);
    if (!report.ok()) {
      std::cerr << "imgpipe: " << report.error().message << "\n";
      return kExitFailure;
    }
    for (const std::string& problem : report->problems) std::cerr << dir << "/" << problem << "\n";
    if (!report->problems.empty()) {
      std::cerr << "imgpipe: the audit log has been tampered with or damaged: " << report->problems.size()
                << " problem(s) in " << report->records << " records\n";
      return kExitFailure;
    }
    std::cout << "ok: " << report->records << " records, chain intact from record " << report->first_seq << "\n";
    return kExitOk;
  }
  if (sub == "list") {
    SystemClock clock;
    auto audit = AuditLog::Open(dir, clock);
    if (!audit.ok()) {
      std::cerr << "imgpipe: " << audit.error().message << "\n";
      return kExitFailure;
    }
    AuditFilter filter;
    filter.limit = 100;
    if (auto v = args->Get("since")) {
      TimePoint t;
      if (!ParseRfc3339(*v, &t)) {
        std::cerr << "imgpipe: --since " << *v << " is not an RFC 3339 time\n";
        return kExitUsage;
      }
      filter.since = t;
    }
    filter.action = args->Get("action").value_or("");
    filter.actor = args->Get("actor").value_or("");
    if (auto v = args->Get("limit")) filter.limit = std::strtoul(v->c_str(), nullptr, 10);
    auto records = (*audit)->Read(filter);
    if (!records.ok()) {
      std::cerr << "imgpipe: " << records.error().message << "\n";
      return kExitFailure;
    }
    for (const AuditRecord& r : *records) {
      std::cout << r.seq << "  " << FormatRfc3339(r.event.at) << "  " << r.event.actor << "  " << r.event.action
                << "  " << (r.event.target.empty() ? "-" : r.event.target) << "  "
                << (r.event.remote.empty() ? "-" : r.event.remote) << "  " << r.event.outcome << "  "
                << boost::json::serialize(r.event.details) << "\n";
    }
    return kExitOk;
  }
  std::cerr << "imgpipe: unknown audit command \"" << sub << "\"; use verify or list\n";
  return kExitUsage;
}

}  // namespace imgpipe
