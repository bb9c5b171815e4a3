// `imgpipe storage check | list | install-lifecycle | show-lifecycle`: the configured blob store, from the command
// line.
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <iostream>

#include "cli/common.hpp"
#include "storage/s3/s3_blob_store.hpp"

namespace imgpipe {

namespace {

constexpr const char* kAzureLifecycleHint =
    "; imgpipe does not install or read lifecycle rules on Azure: a lifecycle management policy is set on the storage "
    "account (az storage account management-policy create; docs/OPERATIONS.md, \"The lifecycle rule\")";

boost::json::array RulesJson(const std::vector<S3LifecycleRule>& rules) {
  boost::json::array out;
  for (const auto& r : rules) {
    out.push_back(boost::json::object{{"id", r.id},
                                      {"prefix", r.prefix},
                                      {"enabled", r.enabled},
                                      {"expiration_days", r.expiration_days},
                                      {"abort_incomplete_upload_days", r.abort_incomplete_upload_days}});
  }
  return out;
}

}  // namespace

int RunStorage(int argc, char** argv) {
  const std::string sub = argc >= 3 ? argv[2] : "";
  if (sub != "check" && sub != "install-lifecycle" && sub != "show-lifecycle" && sub != "list") {
    std::cerr << "usage: imgpipe storage check | list CONTAINER [--prefix P] | install-lifecycle | show-lifecycle "
                 "[--config FILE]\n"
                 "  check              one authenticated request to the configured blob store\n"
                 "  list               the objects of a container (originals, renditions, scripts), one JSON line each\n"
                 "  install-lifecycle  (S3) install the bucket's lifecycle rule for the retention days and print it\n"
                 "  show-lifecycle     (S3) print the bucket's lifecycle rules and how they compare with retention;\n"
                 "                     exit status 1 if they differ\n";
    return kExitUsage;
  }
  auto args = ParseArgs(argc, argv, 3, {"config", "data-dir", "prefix"});
  if (!args) return kExitUsage;
  if (sub == "list" && args->positional.size() != 1) {
    std::cerr << "usage: imgpipe storage list CONTAINER [--prefix P]\n";
    return kExitUsage;
  }
  auto config = LoadConfigFromArgs(*args);
  if (!config) return kExitUsage;
  auto blobs = OpenBlobStore(*config);
  if (!blobs.ok()) {
    std::cerr << "imgpipe: cannot open blob storage: " << blobs.error().message << "\n";
    return kExitFailure;
  }
  if (sub == "check") {
    if (Status s = (*blobs)->Ping(); !s.ok()) {
      std::cerr << "imgpipe: " << (*blobs)->Name() << " blob store: " << s.error().message << "\n";
      return kExitFailure;
    }
    std::cout << "{\"backend\": \"" << (*blobs)->Name() << "\", \"ok\": true}\n";
    return kExitOk;
  }
  if (sub == "list") {
    std::string token;
    do {
      auto page = (*blobs)->List(args->positional[0], args->Get("prefix").value_or(""), token);
      if (!page.ok()) {
        std::cerr << "imgpipe: " << page.error().message << "\n";
        return kExitFailure;
      }
      for (const auto& item : page->items) {
        boost::json::object line{{"key", item.key}, {"size", item.size}, {"created", FormatRfc3339(item.created)}};
        std::cout << boost::json::serialize(line) << "\n";
      }
      token = page->continuation;
    } while (!token.empty());
    return kExitOk;
  }
  auto* s3 = dynamic_cast<S3BlobStore*>(blobs->get());
  if (s3 == nullptr) {
    std::cerr << "imgpipe: " << sub << " needs storage.backend = \"s3\" (this one is \"" << (*blobs)->Name() << "\")"
              << ((*blobs)->Name() == "azure" ? kAzureLifecycleHint : "") << "\n";
    return kExitUsage;
  }
  const auto wanted = S3RetentionLifecycleRules(config->retention_originals, config->retention_renditions);
  if (sub == "install-lifecycle") {
    if (Status s = s3->PutLifecycle(wanted); !s.ok()) {
      std::cerr << "imgpipe: " << s.error().message << "\n";
      return kExitFailure;
    }
  }
  auto rules = s3->GetLifecycle();
  if (!rules.ok()) {
    std::cerr << "imgpipe: " << (sub == "install-lifecycle" ? "installed, but reading the rules back failed: " : "")
              << rules.error().message << "\n";
    return kExitFailure;
  }
  const auto findings = CompareS3Lifecycle(*rules, wanted);
  boost::json::array findings_json;
  for (const auto& f : findings) {
    findings_json.push_back(boost::json::object{{"message", f.message}, {"expires_early", f.expires_early}});
    std::cerr << "imgpipe: " << (f.expires_early ? "DANGER: " : "") << f.message << "\n";
  }
  boost::json::object out{{"bucket", config->s3_bucket},
                          {"rules", RulesJson(*rules)},
                          {"wanted", RulesJson(wanted)},
                          {"matches_retention", findings.empty()},
                          {"findings", std::move(findings_json)}};
  std::cout << boost::json::serialize(out) << "\n";
  if (!findings.empty()) {
    std::cerr << "imgpipe: the bucket's lifecycle rules differ from retention; `imgpipe storage install-lifecycle` "
                 "replaces them\n";
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace imgpipe
