#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "core/clock.hpp"
#include "kafka/kafka_client.hpp"
#include "queue/job_queue.hpp"
#include "warehouse/metadata_store.hpp"

namespace imgpipe {

class Metrics;

struct OutboxRelayOptions {
  std::string jobs_topic = "imgpipe.jobs";  //!< kafka.jobs_topic
  std::string events_topic;                 //!< kafka.events_topic; "" = no image.stored events
  std::string owner;                        //!< lease owner in the outbox, unique per process
  size_t batch = 64;                        //!< jobs relayed per round trip
  //! kafka.outbox_send_timeout: a round waits this long for the broker to acknowledge its events, then its jobs;
  //! the producer given to the relay should drop records after it too (message.timeout.ms)
  std::chrono::milliseconds send_timeout{10000};
  //! kafka.outbox_lease: how long leased outbox rows stay this relay's; more than twice send_timeout, so only a
  //! dead relay's rows ever run out
  std::chrono::milliseconds lease{30000};
  std::chrono::milliseconds retry_delay{2000};  //!< when jobs the broker did not take are tried again
};

//! The gateway side of the Kafka job queue: the transactional outbox. An upload's job is written to the warehouse's
//! jobs table in the image row's own transaction (as with the embedded queue), so the upload is answered 201 once
//! that commits, broker or no broker. This relay leases outbox rows like a worker would, produces each as a job
//! record (idempotent producer, acks=all, keyed by image id) to the jobs topic, after an "image.stored" event for a
//! new image (acknowledged first, so it precedes the image's other events), and deletes the row (Ack) only after the
//! broker acknowledged the job. A crash between the two produces the
//! job again later: workers find the image processed and skip it. While the broker is down rows stay and are
//! retried with backoff (the outbox grows: imgpipe_outbox_depth). Several gateways may relay the same PostgreSQL
//! outbox (leases keep them apart).
class OutboxRelay {
 public:
  OutboxRelay(OutboxRelayOptions options, JobQueue& outbox, MetadataStore& store,
              std::unique_ptr<KafkaProducer> producer, const Clock& clock, Metrics* metrics);
  ~OutboxRelay();
  //! Declares imgpipe_outbox_*; once per registry.
  static void DeclareMetrics(Metrics& metrics);

  void Start();
  //! Stops after the round in progress and returns this relay's leases to the outbox.
  void Stop();

 private:
  void Loop();
  void DepthLoop();
  //! Relays one leased batch; what the broker refused or did not answer goes back to the outbox, due later.
  void Relay(const std::vector<Job>& jobs);

  OutboxRelayOptions options_;
  JobQueue& outbox_;
  MetadataStore& store_;
  std::unique_ptr<KafkaProducer> producer_;
  const Clock& clock_;
  Metrics* metrics_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  std::thread depth_thread_;  // measures the outbox every second, also while a round waits for the broker
};

}  // namespace imgpipe
