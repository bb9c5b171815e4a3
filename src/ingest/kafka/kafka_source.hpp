#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.hpp"
#include "ingest/intake.hpp"
#include "ingest/stream_record.hpp"
#include "kafka/kafka_client.hpp"
#include "storage/blob_store.hpp"
#include "warehouse/metadata_store.hpp"

namespace imgpipe {

class Metrics;

struct KafkaSourceOptions {
  KafkaProperties client;                  //!< brokers and security (KafkaClientProperties)
  std::vector<std::string> topics;         //!< ingest.topics
  std::string group_id = "imgpipe-ingest"; //!< ingest.group_id
  std::string group_instance_id;           //!< ingest.group_instance_id; empty = dynamic membership
  int threads = 4;                         //!< ingest.threads
  int max_in_flight = 64;                  //!< ingest.max_in_flight
  std::chrono::milliseconds max_poll_interval{300000};  //!< ingest.max_poll_interval
  StreamRecordLimits record;
};

//! The dead-letter topic of `topic`.
inline std::string DeadLetterTopic(std::string_view topic) { return std::string(topic) + ".dlq"; }

//! The stream source: consumes the ingest topics in a consumer group and takes every record in through the same
//! Intake as uploads. Guarantees:
//! - a record's offset is stored only after its original and row are durable (Intake::Accept returned ok), or after
//!   the dead-letter topic acknowledged it; offsets move in order per partition, so a crash redelivers exactly the
//!   records that were not finished;
//! - the image id is derived from the record (its timestamp and its imgpipe-source-id, or topic/partition/offset), so
//!   a redelivered record finds its row and adds nothing;
//! - a bad record (bad headers, not an image, over a limit, a claim check naming a missing blob) goes to
//!   "<topic>.dlq" with the reason and the original position in headers, and the partition goes on; a failure of
//!   storage or the database is retried with backoff and holds the partition instead;
//! - when max_in_flight records are in progress every partition is paused (polling goes on, so the group never
//!   sees the consumer as stuck) and resumed at half of it.
class KafkaSource : private KafkaConsumer::RebalanceListener {
 public:
  KafkaSource(KafkaSourceOptions options, Intake& intake, MetadataStore& store, BlobStore& blobs, const Clock& clock,
              Metrics* metrics);
  ~KafkaSource() override;

  //! Connects, subscribes and starts the polling and intake threads. kInvalidArgument for bad client properties;
  //! the broker need not be up yet (the client keeps trying).
  Status Start();
  //! Stops polling, lets records in progress finish (a retry loop gives up; its record comes again later), stores
  //! their offsets and leaves the group.
  void Stop();

  //! Declares the metrics the source records (imgpipe_kafka_*); call once per registry.
  static void DeclareMetrics(Metrics& metrics);

 private:
  struct PartitionState {
    std::map<int64_t, bool> offsets;  // offset -> done, in offset order; the head moves when it is done
    int pending = 0;                  // records dispatched and not finished or given up
  };

  void PollLoop();
  void WorkerLoop();
  void Dispatch(KafkaMessage message);
  void Process(const KafkaMessage& message);
  // Outcome of one record: "stored", "duplicate" or "dead_lettered"; empty when it must come again later (stopping).
  std::string TakeIn(const KafkaMessage& message);
  bool DeadLetter(const KafkaMessage& message, const Error& reason);
  void Finish(const TopicPartition& tp, int64_t offset);
  void ApplyBackPressure();
  void UpdateLag();
  // Sleeps up to `d` unless stopping; false when stopping.
  bool Backoff(std::chrono::milliseconds d);

  void OnAssigned(const std::vector<TopicPartition>& partitions) override;
  void OnRevoked(const std::vector<TopicPartition>& partitions) override;

  KafkaSourceOptions options_;
  Intake& intake_;
  MetadataStore& store_;
  BlobStore& blobs_;
  const Clock& clock_;
  Metrics* metrics_;

  std::unique_ptr<KafkaConsumer> consumer_;
  std::unique_ptr<KafkaProducer> dlq_;
  std::thread poller_;
  std::vector<std::thread> workers_;
  std::atomic<bool> stopping_{false};

  std::mutex mu_;
  std::condition_variable work_cv_;   // a task was queued, or stopping
  std::condition_variable done_cv_;   // a record finished
  std::deque<KafkaMessage> tasks_;
  std::map<TopicPartition, PartitionState> partitions_;  // assigned partitions and their records in progress
  std::map<TopicPartition, int64_t> stored_;             // next offset stored, per partition (for the lag)
  int in_flight_ = 0;
  bool paused_ = false;
  bool workers_done_ = false;
};

}  // namespace imgpipe
