// The Azure and S3 services' XML answers are outside input: any bytes must parse or give an error, never crash, and
// the listing and lifecycle readers on top of a parsed document (and the comparison of lifecycle rules with
// retention) must hold the same line.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "storage/azure/azure_blob_store.hpp"
#include "storage/s3/s3_blob_store.hpp"
#include "storage/xml.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (1 << 20)) return 0;  // the services' answers we read are capped far below this
  std::string_view text(reinterpret_cast<const char*>(data), size);
  imgpipe::XmlLimits limits;
  limits.max_elements = 5000;
  auto doc = imgpipe::ParseXml(text, limits);
  if (!doc.ok()) {
    if (doc.error().kind != imgpipe::ErrorKind::kInvalidArgument || doc.error().message.empty()) std::abort();
    return 0;
  }
  auto azure = imgpipe::ParseAzureListBlobs(*doc, "originals");
  auto s3 = imgpipe::ParseS3ListObjects(*doc, "originals");
  if (s3.ok()) {
    for (const auto& item : s3->items) {
      if (item.key.empty()) std::abort();  // the container prefix is stripped, never the whole key
    }
  }
  auto rules = imgpipe::ParseS3Lifecycle(*doc);
  if (rules.ok()) {
    // Whatever rules a bucket holds, doctor's comparison with retention must name each difference.
    auto wanted = imgpipe::S3RetentionLifecycleRules(std::chrono::hours(7 * 24), std::chrono::hours(36));
    for (const auto& finding : imgpipe::CompareS3Lifecycle(*rules, wanted)) {
      if (finding.message.empty()) std::abort();
    }
  }
  (void)azure;
  return 0;
}
