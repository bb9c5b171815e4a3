// `imgpipe kek list|usage|rotate|rewrap|retire`: key-encryption key management (docs/ENCRYPTION.md). Named `kek`
// because `imgpipe keys` manages API keys. Safe beside a running server: the keyring is shared through flock and
// atomic rename, the token through the HSM, and rewrap publishes each object atomically.
#include <iostream>

#include "cli/common.hpp"
#include "crypto/database_key.hpp"
#include "crypto/key_maintenance.hpp"

namespace imgpipe {

namespace {

constexpr const char* kUsage =
    "usage: imgpipe kek list      [--config FILE] [--data-dir DIR]   KEK versions of the key provider\n"
    "       imgpipe kek usage     ...   objects per KEK version (reads every object's header)\n"
    "       imgpipe kek rotate    ...   add a KEK version; new objects use it\n"
    "       imgpipe kek rewrap    ...   rewrap every object's data key to the newest version (resumable)\n"
    "       imgpipe kek retire VERSION ...   destroy an old version; refused while objects still use it\n";

const std::vector<std::string> kAllContainers = {std::string(kOriginals), std::string(kRenditions),
                                                 std::string(kScripts)};

void PrintReport(const KeyScanReport& r) {
  std::cout << "{\"objects\": " << r.objects << ", \"by_version\": {";
  bool first = true;
  for (const auto& [version, count] : r.by_version) {
    std::cout << (first ? "" : ", ") << "\"" << version << "\": " << count;
    first = false;
  }
  std::cout << "}, \"plaintext\": " << r.plaintext << ", \"unreadable\": " << r.unreadable
            << ", \"rewrapped\": " << r.rewrapped << ", \"encrypted\": " << r.encrypted
            << ", \"changed_meanwhile\": " << r.changed_meanwhile << "}\n";
  for (const std::string& e : r.examples) std::cerr << "  " << e << "\n";
}

}  // namespace

int RunKek(int argc, char** argv) {
  auto parsed = ParseVerbArgs(argc, argv, kUsage, [](std::string_view verb) -> std::optional<size_t> {
    if (verb == "retire") return 1;
    if (verb == "list" || verb == "usage" || verb == "rotate" || verb == "rewrap") return 0;
    return std::nullopt;
  });
  if (!parsed) return kExitUsage;
  const std::string& verb = parsed->verb;
  const Args* args = &parsed->args;
  auto config = LoadConfigFromArgs(*args);
  if (!config) return kExitUsage;
  if (!config->encryption_enabled) {
    std::cerr << "imgpipe: encryption is off (encryption.enabled = false); there are no KEKs to manage\n";
    return kExitUsage;
  }
  SystemClock clock;
  auto stack = OpenBlobStack(*config, clock, /*wait_for_keys=*/true);
  if (!stack.ok()) {
    std::cerr << "imgpipe: " << stack.error().message << "\n";
    return kExitFailure;
  }
  KeyProvider& keys = *stack->provider;
  // The SQLite warehouse's key is wrapped by the same KEK (docs/ENCRYPTION.md, "The warehouse").
  const std::string db_key_file = DatabaseKeyPath(DatabasePath(*config));
  EncryptedBlobStore& store = *stack->encrypted;
  // Changes to the keys are security events: rotate, rewrap and retire go to the audit log.
  auto audit = OpenAudit(*config, clock);
  if (!audit.ok()) {
    std::cerr << "imgpipe: cannot open the audit log: " << audit.error().message << "\n";
    return kExitFailure;
  }
  auto fail = [](const Error& e) {
    std::cerr << "imgpipe: " << e.message << "\n";
    return kExitFailure;
  };

  if (verb == "list") {
    auto versions = keys.Versions();
    if (!versions.ok()) return fail(versions.error());
    std::printf("%-8s %-25s %s\n", "VERSION", "CREATED", "CURRENT");
    for (const KekVersion& v : *versions) {
      std::printf("%-8u %-25s %s\n", v.version,
                  v.created == TimePoint{} ? "-" : FormatRfc3339(v.created).c_str(), v.current ? "yes" : "");
    }
    return kExitOk;
  }
  if (verb == "usage") {
    auto report = ScanKeyUsage(store, kAllContainers);
    if (!report.ok()) return fail(report.error());
    PrintReport(*report);
    return kExitOk;
  }
  if (verb == "rotate") {
    auto added = keys.Rotate();
    AuditCli(audit->get(), clock, "kek.rotate", std::string(keys.Name()), added.ok(),
             {{"version", added.ok() ? added->version : 0}});
    if (!added.ok()) return fail(added.error());
    std::cerr << "added KEK version " << added->version << " (" << keys.Name()
              << "); new objects use it within seconds; run `imgpipe kek rewrap` to move the others\n";
    std::cout << added->version << "\n";
    return kExitOk;
  }
  if (verb == "rewrap") {
    auto report = RewrapAll(store, kAllContainers, [](const KeyScanReport& r) {
      std::cerr << "rewrap: " << r.objects << " objects seen, " << r.rewrapped << " rewrapped\n";
    });
    AuditCli(audit->get(), clock, "kek.rewrap", std::string(keys.Name()), report.ok() && report->unreadable == 0,
             report.ok() ? boost::json::object{{"rewrapped", report->rewrapped},
                                               {"encrypted", report->encrypted},
                                               {"unreadable", report->unreadable}}
                         : boost::json::object{{"error", report.error().message}});
    if (!report.ok()) {
      std::cerr << "imgpipe: rewrap stopped: " << report.error().message
                << "\nrun it again to resume (objects already rewrapped are skipped)\n";
      return kExitFailure;
    }
    auto db_key = RewrapDatabaseKey(keys, db_key_file);
    AuditCli(audit->get(), clock, "kek.rewrap", "warehouse key " + db_key_file, db_key.ok(),
             db_key.ok() ? boost::json::object{{"rewrapped", *db_key}}
                         : boost::json::object{{"error", db_key.error().message}});
    if (!db_key.ok()) {
      std::cerr << "imgpipe: rewrapping the warehouse key failed: " << db_key.error().message
                << "\nrun it again to resume\n";
      return kExitFailure;
    }
    if (*db_key) std::cerr << "rewrap: the warehouse key " << db_key_file << " rewrapped\n";
    PrintReport(*report);
    return report->unreadable == 0 ? kExitOk : kExitFailure;
  }
  if (verb == "retire") {
    uint32_t version = 0;
    const std::string& text = args->positional[0];
    if (text.empty() || text.size() > 9 || text.find_first_not_of("0123456789") != std::string::npos ||
        (version = static_cast<uint32_t>(std::stoul(text))) == 0) {
      std::cerr << "imgpipe: \"" << text << "\" is not a KEK version (see imgpipe kek list)\n";
      return kExitUsage;
    }
    auto report = ScanKeyUsage(store, kAllContainers);
    if (!report.ok()) return fail(report.error());
    auto used = report->by_version.find(version);
    if (used != report->by_version.end() && used->second > 0) {
      std::cerr << "imgpipe: KEK version " << version << " still protects " << used->second
                << " objects; run `imgpipe kek rewrap` first (refusing to retire it)\n";
      return kExitFailure;
    }
    if (auto db_version = DatabaseKeyVersion(db_key_file); db_version.ok() && *db_version == version) {
      std::cerr << "imgpipe: KEK version " << version << " still protects the warehouse key " << db_key_file
                << "; run `imgpipe kek rewrap` first (refusing to retire it)\n";
      return kExitFailure;
    } else if (!db_version.ok() && db_version.error().kind != ErrorKind::kNotFound) {
      return fail(db_version.error());
    }
    if (report->unreadable > 0) {
      std::cerr << "imgpipe: " << report->unreadable
                << " objects have unreadable headers, so their version is unknown; refusing to retire\n";
      PrintReport(*report);
      return kExitFailure;
    }
    Status retired = keys.Retire(version);
    AuditCli(audit->get(), clock, "kek.retire", std::string(keys.Name()), retired.ok(), {{"version", version}});
    if (!retired.ok()) return fail(retired.error());
    std::cerr << "retired KEK version " << version << "\n";
    return kExitOk;
  }
  std::cerr << "imgpipe: unknown kek command \"" << verb << "\"\n" << kUsage;
  return kExitUsage;
}

}  // namespace imgpipe
