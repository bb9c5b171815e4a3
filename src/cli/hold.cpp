// `imgpipe hold set|release|list`: legal holds from the command line, beside a running server, as the API's
// PUT/DELETE /v1/images/{id}/hold do. The actor recorded is "cli" (whoever can run this can open the warehouse).
#include <iostream>

#include "cli/common.hpp"
#include "core/ids.hpp"

namespace imgpipe {

int RunHold(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: imgpipe hold set IMAGE_ID --reason TEXT [--data-dir DIR]\n"
                 "       imgpipe hold release IMAGE_ID [--data-dir DIR]\n"
                 "       imgpipe hold list [--data-dir DIR]\n";
    return kExitUsage;
  }
  std::string sub = argv[2];
  auto args = ParseArgs(argc, argv, 3, {"config", "data-dir", "reason"});
  if (!args) return kExitUsage;
  auto config = LoadConfigFromArgs(*args);
  if (!config) return kExitUsage;
  if (sub != "list" && (args->positional.size() != 1 || !IsValidImageId(args->positional[0]))) {
    std::cerr << "imgpipe: hold " << sub << " needs one image id\n";
    return kExitUsage;
  }
  SystemClock clock;
  auto wh = OpenWarehouse(*config, clock);
  if (!wh.ok()) {
    std::cerr << "imgpipe: cannot open the warehouse: " << wh.error().message << "\n";
    return kExitFailure;
  }
  MetadataStore& store = *wh->store;
  auto audit = OpenAudit(*config, clock);
  if (!audit.ok()) {
    std::cerr << "imgpipe: cannot open the audit log: " << audit.error().message << "\n";
    return kExitFailure;
  }
  if (sub == "set") {
    auto reason = args->Get("reason");
    if (!reason || reason->empty()) {
      std::cerr << "imgpipe: hold set needs --reason (kept with the hold for the audit)\n";
      return kExitUsage;
    }
    auto hold = store.SetLegalHold(ImageId(args->positional[0]), *reason, "cli", clock.Now());
    AuditCli(audit->get(), clock, "hold.set", args->positional[0], hold.ok(), {{"reason", *reason}});
    if (!hold.ok()) {
      std::cerr << "imgpipe: " << hold.error().message << "\n";
      return kExitFailure;
    }
    std::cerr << "image " << hold->image_id.value() << " on legal hold since " << FormatRfc3339(hold->held_at)
              << " (" << hold->reason << ")\n";
    return kExitOk;
  }
  if (sub == "release") {
    Status s = store.ReleaseLegalHold(ImageId(args->positional[0]), "cli", clock.Now());
    AuditCli(audit->get(), clock, "hold.release", args->positional[0], s.ok());
    if (!s.ok()) {
      std::cerr << "imgpipe: " << s.error().message << "\n";
      return kExitFailure;
    }
    std::cerr << "released the legal hold of " << args->positional[0]
              << "; retention deletes it at its next sweep if it is past expires_at\n";
    return kExitOk;
  }
  if (sub == "list") {
    auto holds = store.ListLegalHolds();
    if (!holds.ok()) {
      std::cerr << "imgpipe: " << holds.error().message << "\n";
      return kExitFailure;
    }
    std::printf("%-26s %-25s %-18s %s\n", "IMAGE", "HELD AT", "BY", "REASON");
    for (const LegalHold& h : *holds) {
      std::printf("%-26s %-25s %-18s %s\n", h.image_id.value().c_str(), FormatRfc3339(h.held_at).c_str(),
                  h.held_by.c_str(), h.reason.c_str());
    }
    return kExitOk;
  }
  std::cerr << "imgpipe: unknown hold command \"" << sub << "\"; use set, release or list\n";
  return kExitUsage;
}

}  // namespace imgpipe
