// `imgpipe retention run`: one retention sweep, beside a running server or alone.
#include <iostream>

#include "cli/common.hpp"
#include "queue/kafka/kafka_image_events.hpp"
#include "retention/retention_sweeper.hpp"

namespace imgpipe {

int RunRetention(int argc, char** argv) {
  if (argc < 3 || std::string(argv[2]) != "run") {
    std::cerr << "usage: imgpipe retention run [--data-dir DIR] [--now RFC3339]\n";
    return kExitUsage;
  }
  auto args = ParseArgs(argc, argv, 3, {"config", "data-dir", "now"});
  if (!args) return kExitUsage;
  auto config = LoadConfigFromArgs(*args);
  if (!config) return kExitUsage;
  SystemClock system_clock;
  TimePoint now = system_clock.Now() + config->clock_offset;
  if (auto n = args->Get("now")) {
    if (!ParseRfc3339(*n, &now)) {
      std::cerr << "imgpipe: --now \"" << *n << "\" is not an RFC 3339 time\n";
      return kExitUsage;
    }
  }
  auto wh = OpenWarehouse(*config, system_clock);
  if (!wh.ok()) {
    std::cerr << "imgpipe: cannot open the warehouse: " << wh.error().message << "\n";
    return kExitFailure;
  }
  // Deleting needs no key; the key provider is only checked to be configured consistently.
  auto blobs = OpenBlobStack(*config, system_clock, /*wait_for_keys=*/false, /*install_lifecycle=*/false,
                             wh->keys.get());
  if (!blobs.ok()) {
    std::cerr << "imgpipe: cannot open blob storage: " << blobs.error().message << "\n";
    return kExitFailure;
  }
  RetentionPolicy policy;
  policy.originals = config->retention_originals;
  policy.renditions = config->retention_renditions;
  RetentionSweeper sweeper(policy, blobs->store(), *wh->store, system_clock, nullptr);
  auto audit = OpenAudit(*config, system_clock);
  if (!audit.ok()) {
    std::cerr << "imgpipe: cannot open the audit log: " << audit.error().message << "\n";
    return kExitFailure;
  }
  sweeper.SetAudit(audit->get(), config->audit_retention);
  // With the Kafka queue, expiries are events for downstream consumers, as from a sweeping `serve`.
  std::unique_ptr<KafkaImageEvents> events;
  if (config->queue_backend == "kafka" && !config->kafka_events_topic.empty()) {
    auto producer = KafkaProducer::Create(KafkaClientProperties(*config));
    if (!producer.ok()) {
      std::cerr << "imgpipe: cannot create a Kafka producer: " << producer.error().message << "\n";
      return kExitFailure;
    }
    events = std::make_unique<KafkaImageEvents>(config->kafka_events_topic, std::move(producer).value(), nullptr);
    sweeper.SetEvents(events.get());
  }
  // The same lease as the sweepers inside `serve`: a scheduled run never overlaps one of them (or another run).
  sweeper.SetLease(LeaseOwner("retention-run"), config->sweeper_lease);
  auto swept = sweeper.RunIfLeader(now);
  sweeper.Stop();
  if (events) events->Stop(config->shutdown_grace);
  if (!swept.ok()) {
    std::cerr << "imgpipe: retention failed: " << swept.error().message << "\n";
    return kExitFailure;
  }
  if (!*swept) {
    std::cout << "{\"skipped\": \"another process holds the retention sweeper lease (retention.sweeper = true "
                 "somewhere); it sweeps\"}\n";
    return kExitOk;
  }
  const SweepReport* report = &**swept;
  std::cout << "{\"expired\": " << report->expired_images << ", \"deleted_blobs\": " << report->deleted_blobs
            << ", \"errors\": " << report->errors << ", \"now\": \"" << FormatRfc3339(now) << "\"}\n";
  return report->errors == 0 ? kExitOk : kExitFailure;
}

}  // namespace imgpipe
