#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.hpp"
#include "kafka/kafka_client.hpp"
#include "queue/job_queue.hpp"

namespace imgpipe {

class Metrics;

struct KafkaJobQueueOptions {
  KafkaProperties client;                      //!< brokers and security (KafkaClientProperties)
  std::string topic = "imgpipe.jobs";          //!< kafka.jobs_topic; retries go to "<topic>.retry", dead letters "<topic>.dlq"
  std::string group_id = "imgpipe-workers";    //!< kafka.jobs_group_id
  std::string group_instance_id;               //!< static membership; "" = dynamic
  int max_in_flight = 16;                      //!< records held (waiting or leased) before partitions pause
  std::chrono::milliseconds max_poll_interval{300000};
  std::chrono::milliseconds session_timeout{45000};  //!< kafka.jobs_session_timeout
  std::chrono::milliseconds send_timeout{30000};  //!< how long a retry or dead letter waits for the broker
  //! How long a rebalance waits for leased jobs of partitions being taken away (queue.lease); longer jobs are
  //! finished anyway, and the new owner may run them a second time (harmless: results are upserts).
  std::chrono::milliseconds revoke_grace{60000};
};

//! The worker side of the Kafka job queue (queue.backend = "kafka"): jobs are records on a jobs topic, keyed by image
//! id, consumed in a consumer group (cooperative-sticky). The JobQueue lease model maps onto it like this:
//! - Lease hands out records polled by one background thread; a lease lasts as long as this consumer owns the
//!   partition (the `lease` argument is not used), and two records of one image are never leased at once.
//! - Ack marks the record done; offsets are stored in order per partition, only up to the first record not done, so
//!   an offset moves only after every job before it had its results durable. A crash redelivers from there.
//! - Retry re-produces the job to "<topic>.retry" with its attempt count and not-before time in headers, then
//!   marks the original done; the retry record is held (not leased) until its time.
//! - DeadLetter (after queue.max_attempts, a permanent failure, or a record that is not a job) writes the job to
//!   "<topic>.dlq" with the reason, then marks it done.
//! - ReleaseLeases hands leased jobs back: their offsets are not stored, so they come again to this or another
//!   member.
//! Back-pressure: when max_in_flight records are held every partition is paused and polling goes on, so the group
//! never sees this member as stuck however long a job takes (max.poll.interval.ms is never reached by waiting).
//! Enqueueing is not here: the image transaction writes the job to the warehouse's jobs table, which is the outbox
//! that OutboxRelay publishes to the topic.
class KafkaJobQueue : public JobQueue, private KafkaConsumer::RebalanceListener {
 public:
  KafkaJobQueue(KafkaJobQueueOptions options, const Clock& clock, Metrics* metrics);
  ~KafkaJobQueue() override;

  //! Declares the imgpipe_jobs_* metrics; once per registry.
  static void DeclareMetrics(Metrics& metrics);

  //! Connects, subscribes to the jobs and retry topics and starts polling. kInvalidArgument for bad client
  //! properties; the broker need not be up yet.
  Status Start();
  //! The drain: stops handing out jobs, hands back those fetched and not leased, stores the offsets of finished
  //! jobs, commits them and leaves the group, so the group rebalances at once. Call after the workers stopped (or
  //! released their leases). Idempotent.
  void Close();

  Result<std::vector<Job>> Lease(const std::string& owner, size_t max, std::chrono::milliseconds lease,
                                 std::chrono::milliseconds wait) override;
  Status Ack(const Job& job) override;
  Status Retry(const Job& job, TimePoint retry_at, const std::string& error) override;
  Status DeadLetter(const Job& job, const std::string& reason) override;
  Status ReleaseLeases(const std::string& owner) override;
  void Wake() override;
  //! The consumer lag summed over this member's partitions (records not yet done), as last measured.
  Result<int64_t> Depth() override;
  Status Ping() override;

 private:
  struct Entry {
    TopicPartition tp;
    int64_t offset = 0;
    Job job;
    TimePoint not_before{};
  };
  struct PartitionState {
    std::map<int64_t, bool> offsets;  // offset -> done; the stored offset moves past the done head
    int64_t stored = -1;              // next offset stored; -1 before the first
  };
  // A dead letter not yet acknowledged by the broker; its record's offset waits for it.
  struct PendingDeadLetter {
    TopicPartition tp;
    int64_t offset = 0;
    KafkaProducer::Record record;
  };

  void PollLoop();
  void Take(KafkaMessage message);
  void MarkDoneLocked(const TopicPartition& tp, int64_t offset);
  void StoreHeadsLocked();
  void ApplyBackPressureLocked();
  void SendPendingDeadLetters();
  void UpdateLag();
  size_t InFlightLocked() const { return ready_.size() + leased_.size() + dead_letters_.size(); }
  //! Takes the leased entry of `job` out of the lease table; nullopt if it is not leased (handed back, or its
  //! partition went to another member).
  std::optional<Entry> Unlease(const Job& job);
  KafkaProducer::Record DeadLetterRecord(const Entry& entry, const std::string& reason, const std::string& code);

  void OnAssigned(const std::vector<TopicPartition>& partitions) override;
  void OnRevoked(const std::vector<TopicPartition>& partitions) override;

  KafkaJobQueueOptions options_;
  const Clock& clock_;
  Metrics* metrics_;
  std::string retry_topic_;
  std::string dlq_topic_;

  std::unique_ptr<KafkaConsumer> consumer_;
  std::unique_ptr<KafkaProducer> producer_;
  std::thread poller_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> closing_{false};
  std::atomic<bool> failed_{false};
  std::atomic<int64_t> lag_{0};

  std::mutex mu_;
  std::condition_variable ready_cv_;  // a record became leasable, or closing
  std::condition_variable done_cv_;   // a leased record was finished or handed back
  std::deque<Entry> ready_;
  std::map<int64_t, Entry> leased_;   // by Job::id
  std::multiset<std::string> leased_images_;
  std::deque<PendingDeadLetter> dead_letters_;
  std::map<TopicPartition, PartitionState> partitions_;
  int64_t next_job_id_ = 1;
  bool paused_ = false;
  int64_t finished_ = 0;
  int64_t handed_back_ = 0;
};

}  // namespace imgpipe
