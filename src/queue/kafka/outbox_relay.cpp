#include "queue/kafka/outbox_relay.hpp"

#include <algorithm>

#include "core/image_events.hpp"
#include "core/log.hpp"
#include "core/metrics.hpp"
#include "queue/kafka/job_record.hpp"

namespace imgpipe {

namespace {
constexpr auto kWait = std::chrono::milliseconds(500);
constexpr auto kDepthInterval = std::chrono::seconds(1);
}  // namespace

void OutboxRelay::DeclareMetrics(Metrics& m) {
  m.DeclareGauge("imgpipe_outbox_depth",
                 "Jobs in the outbox (the warehouse's jobs table) not yet acknowledged by the Kafka jobs topic");
  m.DeclareCounter("imgpipe_outbox_relayed_total", "Jobs relayed from the outbox to the Kafka jobs topic");
  m.DeclareCounter("imgpipe_outbox_send_failures_total", "Relay rounds the broker refused or did not answer in time");
}

OutboxRelay::OutboxRelay(OutboxRelayOptions options, JobQueue& outbox, MetadataStore& store,
                         std::unique_ptr<KafkaProducer> producer, const Clock& clock, Metrics* metrics)
    : options_(std::move(options)),
      outbox_(outbox),
      store_(store),
      producer_(std::move(producer)),
      clock_(clock),
      metrics_(metrics) {}

OutboxRelay::~OutboxRelay() { Stop(); }

void OutboxRelay::Start() {
  thread_ = std::thread([this] { Loop(); });
  if (metrics_) depth_thread_ = std::thread([this] { DepthLoop(); });
}

void OutboxRelay::DepthLoop() {
  while (!stopping_) {
    if (auto depth = outbox_.Depth(); depth.ok()) metrics_->Set("imgpipe_outbox_depth", {}, double(*depth));
    for (int i = 0; i < 10 && !stopping_; ++i) std::this_thread::sleep_for(kDepthInterval / 10);
  }
}

void OutboxRelay::Stop() {
  if (!thread_.joinable()) return;
  stopping_ = true;
  outbox_.Wake();
  thread_.join();
  if (depth_thread_.joinable()) depth_thread_.join();
  if (Status s = outbox_.ReleaseLeases(options_.owner); !s.ok()) {
    LogWarn("outbox relay: cannot return its leases; they run out by themselves", {{"error", s.error().message}});
  }
}

void OutboxRelay::Loop() {
  while (!stopping_) {
    auto jobs = outbox_.Lease(options_.owner, options_.batch, options_.lease, kWait);
    if (!jobs.ok()) {
      LogWarn("outbox relay: cannot read the outbox", {{"error", jobs.error().message}});
      std::this_thread::sleep_for(std::chrono::seconds(1));
      continue;
    }
    if (!jobs->empty()) Relay(*jobs);
  }
}

void OutboxRelay::Relay(const std::vector<Job>& jobs) {
  std::vector<bool> ok(jobs.size(), true);
  std::string error;
  // Sends `records` (records[r] belongs to jobs[owner[r]]) and marks the jobs of the refused ones.
  auto send = [&](const std::vector<KafkaProducer::Record>& records, const std::vector<size_t>& owner) {
    auto results = producer_->SendMany(records, options_.send_timeout);
    for (size_t r = 0; r < results.size(); ++r) {
      if (results[r].ok()) continue;
      ok[owner[r]] = false;
      error = results[r].error().message;
    }
  };
  // Events first, then the jobs of those whose event the broker took: image.stored is on the events topic before
  // any worker can see the job, so a consumer never gets image.processed before it.
  if (!options_.events_topic.empty()) {
    std::vector<KafkaProducer::Record> events;
    std::vector<size_t> event_of;  // events[i] belongs to jobs[event_of[i]]
    for (size_t i = 0; i < jobs.size(); ++i) {
      // A job for an image that never ran is its arrival; a reprocessing job (the image has runs) is not.
      auto image = store_.GetImage(jobs[i].image_id);
      auto runs = store_.ListRuns(jobs[i].image_id);
      if (!image.ok() || !runs.ok() || !runs->empty()) continue;
      ImageEvent e = StoredEvent(*image, clock_.Now());
      events.push_back({options_.events_topic, jobs[i].image_id.value(), EncodeImageEvent(e),
                        {{"imgpipe-event", e.type}}});
      event_of.push_back(i);
    }
    send(events, event_of);
  }
  std::vector<KafkaProducer::Record> records;
  std::vector<size_t> job_of;  // records[i] belongs to jobs[job_of[i]]
  for (size_t i = 0; i < jobs.size(); ++i) {
    if (!ok[i]) continue;
    Job job = jobs[i];
    job.attempts = 0;  // outbox leases are not processing attempts
    records.push_back({options_.jobs_topic, job.image_id.value(), EncodeJobValue(job),
                       {{std::string(kJobAttemptsHeader), "0"}}});
    job_of.push_back(i);
  }
  send(records, job_of);
  size_t relayed = 0;
  for (size_t i = 0; i < jobs.size(); ++i) {
    if (ok[i]) {
      Status acked = outbox_.Ack(jobs[i]);
      if (acked.ok()) {
        ++relayed;
      } else {
        LogWarn("outbox relay: cannot remove a relayed job; it will be relayed again (harmless)",
                {{"error", acked.error().message}});
      }
      continue;
    }
    // Back to the outbox, due a little later (the broker is away, or refused).
    (void)outbox_.Retry(jobs[i], clock_.Now() + options_.retry_delay, error);
  }
  if (metrics_) {
    if (relayed > 0) metrics_->Add("imgpipe_outbox_relayed_total", {}, static_cast<double>(relayed));
    if (relayed < jobs.size()) metrics_->Add("imgpipe_outbox_send_failures_total", {});
  }
  if (relayed < jobs.size()) {
    LogWarn("outbox relay: the broker did not take jobs; they stay in the outbox and are retried",
            {{"jobs", static_cast<int64_t>(jobs.size() - relayed)}, {"error", error}});
  }
}

}  // namespace imgpipe
