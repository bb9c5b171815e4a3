// `imgpipe keys create|list|revoke`: works beside a running server (SQLite WAL, separate connections).
#include <iostream>

#include "cli/common.hpp"
#include "security/api_keys.hpp"

namespace imgpipe {

int RunKeys(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: imgpipe keys create --role admin|uploader|reader|analyst [--name NAME] [--data-dir DIR]\n"
                 "       imgpipe keys list [--data-dir DIR]\n"
                 "       imgpipe keys revoke KEY_ID [--data-dir DIR]\n";
    return kExitUsage;
  }
  std::string sub = argv[2];
  auto args = ParseArgs(argc, argv, 3, {"config", "data-dir", "role", "name"});
  if (!args) return kExitUsage;
  auto config = LoadConfigFromArgs(*args);
  if (!config) return kExitUsage;
  SystemClock clock;
  auto wh = OpenWarehouse(*config, clock);
  if (!wh.ok()) {
    std::cerr << "imgpipe: cannot open the warehouse: " << wh.error().message << "\n";
    return kExitFailure;
  }
  ApiKeys keys(*wh->store, clock);
  auto audit = OpenAudit(*config, clock);
  if (!audit.ok()) {
    std::cerr << "imgpipe: cannot open the audit log: " << audit.error().message << "\n";
    return kExitFailure;
  }
  if (sub == "create") {
    Role role;
    auto role_text = args->Get("role");
    if (!role_text || !ParseRole(*role_text, &role)) {
      std::cerr << "imgpipe: keys create needs --role admin|uploader|reader|analyst\n";
      return kExitUsage;
    }
    auto created = keys.Create(role, args->Get("name").value_or(""));
    AuditCli(audit->get(), clock, "key.create", created.ok() ? created->record.id : "", created.ok(),
             {{"role", RoleName(role)}});
    if (!created.ok()) {
      std::cerr << "imgpipe: cannot create the key: " << created.error().message << "\n";
      return kExitFailure;
    }
    std::cerr << "created " << RoleName(role) << " key " << created->record.id << " (the secret is shown once)\n";
    std::cout << created->secret << "\n";
    return kExitOk;
  }
  if (sub == "list") {
    auto list = keys.List();
    if (!list.ok()) {
      std::cerr << "imgpipe: " << list.error().message << "\n";
      return kExitFailure;
    }
    std::printf("%-18s %-9s %-24s %-25s %s\n", "ID", "ROLE", "NAME", "CREATED", "REVOKED");
    for (const auto& k : *list) {
      std::printf("%-18s %-9s %-24s %-25s %s\n", k.id.c_str(), std::string(RoleName(k.role)).c_str(),
                  k.name.c_str(), FormatRfc3339(k.created_at).c_str(),
                  k.revoked_at ? FormatRfc3339(*k.revoked_at).c_str() : "-");
    }
    return kExitOk;
  }
  if (sub == "revoke") {
    if (args->positional.size() != 1) {
      std::cerr << "usage: imgpipe keys revoke KEY_ID\n";
      return kExitUsage;
    }
    Status s = keys.Revoke(args->positional[0]);
    AuditCli(audit->get(), clock, "key.revoke", args->positional[0], s.ok());
    if (!s.ok()) {
      std::cerr << "imgpipe: " << s.error().message << "\n";
      return kExitFailure;
    }
    std::cerr << "revoked " << args->positional[0] << "\n";
    return kExitOk;
  }
  std::cerr << "imgpipe: unknown keys command \"" << sub << "\"; use create, list or revoke\n";
  return kExitUsage;
}

}  // namespace imgpipe
