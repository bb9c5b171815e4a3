// `imgpipe storage check | install-lifecycle`: the configured blob store, from the command line.
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <iostream>

#include "cli/common.hpp"
#include "storage/s3/s3_blob_store.hpp"

namespace imgpipe {

int RunStorage(int argc, char** argv) {
  const std::string sub = argc >= 3 ? argv[2] : "";
  if (sub != "check" && sub != "install-lifecycle" && sub != "list") {
    std::cerr << "usage: imgpipe storage check | list CONTAINER [--prefix P] | install-lifecycle [--config FILE]\n"
                 "  check              one authenticated request to the configured blob store\n"
                 "  list               the objects of a container (originals, renditions, scripts), one JSON line each\n"
                 "  install-lifecycle  (S3) install the bucket's lifecycle rule for the retention days and print it\n";
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
    std::cerr << "imgpipe: install-lifecycle needs storage.backend = \"s3\" (this one is \"" << (*blobs)->Name()
              << "\"; on Azure, set a lifecycle management policy on the storage account instead)\n";
    return kExitUsage;
  }
  if (Status s = s3->PutLifecycle(S3RetentionLifecycleRules(config->retention_originals,
                                                            config->retention_renditions));
      !s.ok()) {
    std::cerr << "imgpipe: " << s.error().message << "\n";
    return kExitFailure;
  }
  auto rules = s3->GetLifecycle();
  if (!rules.ok()) {
    std::cerr << "imgpipe: installed, but reading the rules back failed: " << rules.error().message << "\n";
    return kExitFailure;
  }
  std::cout << "{\"bucket\": \"" << config->s3_bucket << "\", \"rules\": [";
  for (size_t i = 0; i < rules->size(); ++i) {
    const auto& r = (*rules)[i];
    std::cout << (i ? ", " : "") << "{\"id\": \"" << r.id << "\", \"prefix\": \"" << r.prefix
              << "\", \"expiration_days\": " << r.expiration_days
              << ", \"abort_incomplete_upload_days\": " << r.abort_incomplete_upload_days << "}";
  }
  std::cout << "]}\n";
  return kExitOk;
}

}  // namespace imgpipe
