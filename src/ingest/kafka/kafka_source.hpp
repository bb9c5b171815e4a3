#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
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
  int threads = 8;                         //!< ingest.threads
  int max_in_flight = 128;                 //!< ingest.max_in_flight
  std::chrono::milliseconds max_poll_interval{300000};  //!< ingest.max_poll_interval
  std::chrono::milliseconds session_timeout{45000};     //!< ingest.session_timeout
  StreamRecordLimits record;
  //! testing.kafka_seek_ahead: when > 0, the first time a partition is read the source moves its fetch position this
  //! many records ahead, as a client that skipped records would; the continuity check must bring them back. Tests only.
  int testing_seek_ahead = 0;
};

//! The dead-letter topic of `topic`.
inline std::string DeadLetterTopic(std::string_view topic) { return std::string(topic) + ".dlq"; }

//! The stream source: consumes the ingest topics in a consumer group and takes every record in through the same
//! Intake as uploads. Guarantees:
//! - a record's offset is stored only after its original and row are durable, or after the dead-letter topic
//!   acknowledged it; offsets move in order per partition, so a crash redelivers exactly the records that were not
//!   finished;
//! - no record is passed over: each partition is checked to start at the group's committed offset (or the log start)
//!   and to go on without holes; a record the client skipped is read again (warning, imgpipe_kafka_gaps_total), and
//!   until it is, the partition's offset does not move past it; a hole the log really has (compaction, transaction
//!   markers, retention) is confirmed by a second read and logged;
//! - the image id is derived from the record (its timestamp and its imgpipe-source-id, or topic/partition/offset), so
//!   a redelivered record finds its row and adds nothing;
//! - a bad record (bad headers, not an image, over a limit, a claim check naming a missing blob) goes to
//!   "<topic>.dlq" with the reason and the original position in headers, and the partition goes on; a failure of
//!   storage or the database is retried with backoff and holds the partition instead;
//! - at most max_in_flight records are held: when the window is full the source stops polling until a record
//!   finishes; only if it stays full for half of max_poll_interval (a dependency is down) are the partitions paused,
//!   so the group never sees a stuck member.
//! Records are validated and stored by `threads` threads at once, and the rows of the records stored meanwhile are
//! committed together in one transaction (group commit).
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
  //! For /readyz: whether the brokers answer the source's consumer (at most `timeout`), and if not, why.
  Status Health(std::chrono::milliseconds timeout);

  //! Declares the metrics the source records (imgpipe_kafka_*); call once per registry.
  static void DeclareMetrics(Metrics& metrics);

 private:
  struct PartitionState {
    std::map<int64_t, bool> offsets;  // dispatched offset -> done, in offset order; the head moves when it is done
    int pending = 0;                  // records dispatched and not finished or given up
    std::optional<int64_t> expected;  // the next offset this partition must deliver; unknown until its first record
    std::optional<int64_t> hole;      // a suspected gap starts here: the stored offset never moves past it
    std::optional<int64_t> hole_witness;  // the record that arrived in the gap's place
    bool seeked_ahead = false;        // testing_seek_ahead done
  };
  // A record whose original is stored and whose row waits for the group commit.
  struct Staged {
    KafkaMessage message;
    StagedImage image;
  };
  enum class Outcome { kStaged, kDuplicate, kDeadLettered, kAbandoned };

  void PollLoop();
  // Waits while the window is full; false when the poll thread should not poll now.
  bool WaitForRoom();
  void Admit(KafkaMessage message);
  // Checks the record's offset against the partition's expected one; false if the record must be dropped.
  bool Continuous(const TopicPartition& tp, const KafkaMessage& message);
  void WorkerLoop();
  Outcome TakeIn(const KafkaMessage& message, std::optional<StagedImage>* staged);
  void CommitGroup(Staged staged);
  void CommitBatch(std::vector<Staged>& batch);
  bool DeadLetter(const KafkaMessage& message, const Error& reason);
  void Finish(const KafkaMessage& message, std::string_view outcome);
  void Abandon(const KafkaMessage& message);
  void MoveHead(const TopicPartition& tp, PartitionState& p);
  void SetPaused(bool pause);
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
  std::condition_variable done_cv_;   // a record finished (room in the window), or stopping
  std::deque<KafkaMessage> tasks_;
  std::map<TopicPartition, PartitionState> partitions_;  // assigned partitions and their records in progress
  std::map<TopicPartition, int64_t> stored_;             // next offset stored, per partition (for the lag)
  int in_flight_ = 0;
  bool paused_ = false;
  bool workers_done_ = false;
  std::optional<std::chrono::steady_clock::time_point> full_since_;

  // Group commit: records staged by any intake thread wait here; one thread at a time commits all that wait.
  std::mutex commit_mu_;
  std::vector<Staged> commit_pending_;
  bool committing_ = false;
};

}  // namespace imgpipe
