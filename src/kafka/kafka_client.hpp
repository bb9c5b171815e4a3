#pragma once

#include <librdkafka/rdkafka.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/config.hpp"
#include "core/result.hpp"

namespace imgpipe {

//! librdkafka properties by name ("bootstrap.servers", "security.protocol", ...), passed through unchanged.
using KafkaProperties = std::map<std::string, std::string>;

//! The client properties every imgpipe Kafka client shares: brokers, client id and the security settings of the
//! [kafka] section (SASL_SSL with SCRAM, a TLS CA, a client certificate).
KafkaProperties KafkaClientProperties(const Config& config);

//! Maps a librdkafka error to the ErrorKind a caller branches on: broker or network trouble is kUnavailable (retry
//! later), a message over the broker's size limit kTooLarge, bad configuration or arguments kInvalidArgument,
//! authentication and authorization failures kPermissionDenied.
ErrorKind KafkaErrorKind(rd_kafka_resp_err_t err);
//! An Error with `what` and librdkafka's description of `err`.
Error KafkaError(rd_kafka_resp_err_t err, std::string_view what);

//! One record header. A header may be present without a value (null), which is not the same as an empty value.
struct KafkaHeader {
  std::string name;
  std::optional<std::string> value;
};

//! A consumed record. Owns librdkafka's message; its views are valid while this lives.
class KafkaMessage {
 public:
  explicit KafkaMessage(rd_kafka_message_t* msg) : msg_(msg) {}
  KafkaMessage(KafkaMessage&&) noexcept = default;
  KafkaMessage& operator=(KafkaMessage&&) noexcept = default;

  std::string_view topic() const;
  int32_t partition() const { return msg_->partition; }
  int64_t offset() const { return msg_->offset; }
  //! The record's timestamp in ms since the epoch (producer's CreateTime or the broker's LogAppendTime); -1 if none.
  int64_t timestamp_ms() const;
  std::string_view value() const;
  std::optional<std::string_view> key() const;
  //! Every header in order (names may repeat).
  std::vector<KafkaHeader> headers() const;

 private:
  struct Free {
    void operator()(rd_kafka_message_t* m) const { rd_kafka_message_destroy(m); }
  };
  std::unique_ptr<rd_kafka_message_t, Free> msg_;
};

struct TopicPartition {
  std::string topic;
  int32_t partition = 0;
  auto operator<=>(const TopicPartition&) const = default;
};

//! A producer whose every send is confirmed by the broker before it returns (acks=all, idempotent). Thread-safe.
class KafkaProducer {
 public:
  //! kInvalidArgument naming the bad property.
  static Result<std::unique_ptr<KafkaProducer>> Create(const KafkaProperties& properties);
  ~KafkaProducer();
  KafkaProducer(const KafkaProducer&) = delete;
  KafkaProducer& operator=(const KafkaProducer&) = delete;

  //! Sends one record and waits for the broker's acknowledgement (at most `timeout`). Ok means the record is in the
  //! topic's log (acks=all); an error means it may or may not be (kUnavailable when the broker could not be reached
  //! in time, kTooLarge over message.max.bytes).
  Status Send(const std::string& topic, std::optional<std::string_view> key, std::string_view value,
              const std::vector<KafkaHeader>& headers, std::chrono::milliseconds timeout);

  //! One record of a SendMany() batch.
  struct Record {
    std::string topic;
    std::optional<std::string> key;
    std::string value;
    std::vector<KafkaHeader> headers;
  };
  //! Sends every record and waits (at most `timeout` in all) for each acknowledgement; one round trip for the batch
  //! instead of one per record. The result has one Status per record, in order, with the meaning of Send()'s.
  std::vector<Status> SendMany(const std::vector<Record>& records, std::chrono::milliseconds timeout);

 private:
  KafkaProducer(rd_kafka_t* rk, std::string bootstrap);
  //! After a send that got nothing through: gives librdkafka the bootstrap servers again (AddBootstrapServers). A broker shutting down can
  //! answer a metadata request with no brokers at all; librdkafka then forgets the brokers it knew and, with none
  //! left, waits up to five minutes (metadata.recovery.rebootstrap.trigger.ms, which does not start while it has no
  //! broker to ask) before it bootstraps again, sending nothing meanwhile. Adding servers it still knows does nothing.
  void RediscoverBrokers();
  rd_kafka_t* rk_;
  std::string bootstrap_;
};

//! The last client-level error a librdkafka client reported (a broker unreachable, a refused SASL login, a broker
//! certificate that does not verify): librdkafka retries those by itself, and a request that fails because of one
//! only times out, so this is what lets an error say why. Thread-safe.
class KafkaClientErrors {
 public:
  struct Last {
    rd_kafka_resp_err_t code = RD_KAFKA_RESP_ERR_NO_ERROR;
    std::string reason;  //!< librdkafka's text, e.g. "SASL authentication error: ..."; empty when none
  };
  void Record(rd_kafka_resp_err_t code, const char* reason);
  Last Get() const;
  void Clear();
  //! A refused login or a failed TLS handshake: the client's settings are wrong, not the network.
  static bool IsCredentials(rd_kafka_resp_err_t code);

 private:
  mutable std::mutex mu_;
  Last last_;
};

//! What a Kafka cluster says of itself in answer to a metadata request.
struct KafkaClusterInfo {
  std::vector<std::string> brokers;  //!< "host:port" of every broker the cluster advertises, as it advertises them
  int topics = 0;                    //!< topics the client may see
};

//! Asks the cluster at `properties` (bootstrap servers, security settings) for its metadata, waiting at most
//! `timeout`. Ok proves a Kafka broker answers there and accepts these settings; kUnavailable when none answered in
//! time (nothing listens, or what listens does not speak Kafka), kPermissionDenied when the login was refused or the
//! broker's certificate did not verify (the message quotes librdkafka's reason), kInvalidArgument for a refused
//! property.
Result<KafkaClusterInfo> DescribeKafkaCluster(const KafkaProperties& properties, std::chrono::milliseconds timeout);

//! A group consumer's properties: the shared client properties plus its group, static membership when
//! `group_instance_id` is not empty, and the two liveness bounds (poll interval, session timeout).
KafkaProperties GroupConsumerProperties(KafkaProperties client, const std::string& group_id,
                                        const std::string& group_instance_id,
                                        std::chrono::milliseconds max_poll_interval,
                                        std::chrono::milliseconds session_timeout);

//! A group consumer with manual offset storage: offsets move only when StoreOffset() is called (librdkafka commits
//! stored offsets in the background and on close). Cooperative-sticky assignment; optional static membership via
//! "group.instance.id" in the properties. Poll() and Close() belong to one thread; StoreOffset, Pause and Resume
//! may be called from it too (the rebalance listener runs inside Poll on that thread).
class KafkaConsumer {
 public:
  //! Called inside Poll() when partitions are added to or taken from this consumer. Revoked: the listener must
  //! finish or drop the work of those partitions and store their offsets before returning; it is the last chance.
  struct RebalanceListener {
    virtual ~RebalanceListener() = default;
    virtual void OnAssigned(const std::vector<TopicPartition>& partitions) = 0;
    virtual void OnRevoked(const std::vector<TopicPartition>& partitions) = 0;
  };

  static Result<std::unique_ptr<KafkaConsumer>> Create(const KafkaProperties& properties,
                                                       RebalanceListener* listener);
  ~KafkaConsumer();
  KafkaConsumer(const KafkaConsumer&) = delete;
  KafkaConsumer& operator=(const KafkaConsumer&) = delete;

  Status Subscribe(const std::vector<std::string>& topics);
  //! The next record, nullopt when none came within `timeout`. Consumer errors that librdkafka recovers from by
  //! itself (a broker going away, end of partition) are logged and give nullopt; fatal ones are returned. Every
  //! 10 s it also checks that a broker answers, and if none does gives librdkafka bootstrap.servers again (see
  //! KafkaProducer::RediscoverBrokers): at most 1 s of that call then.
  Result<std::optional<KafkaMessage>> Poll(std::chrono::milliseconds timeout);
  //! Marks everything before `next_offset` on the partition as done; committed with the next auto-commit.
  Status StoreOffset(const TopicPartition& tp, int64_t next_offset);
  //! Commits the stored offsets now and waits for the broker (used before giving partitions away).
  Status CommitStored();
  Status Pause(const std::vector<TopicPartition>& partitions);
  Status Resume(const std::vector<TopicPartition>& partitions);
  //! The broker's high watermark for the partition as last seen by fetches (no request); nullopt if not known yet.
  std::optional<int64_t> HighWatermark(const TopicPartition& tp);
  //! Where this group's consumption of the partition starts: its committed offset, or, when the group has none (or
  //! one outside the log), the partition's first offset (log start). Asks the group coordinator and the
  //! partition leader (two round trips, at most `timeout` each).
  Result<int64_t> StartOffset(const TopicPartition& tp, std::chrono::milliseconds timeout);
  //! Moves the partition's fetch position to `offset`: records already fetched past it are dropped and fetched
  //! again from there. The partition must be assigned.
  Status Seek(const TopicPartition& tp, int64_t offset, std::chrono::milliseconds timeout);
  //! Whether the brokers answer this client now: one metadata request of at most `timeout`, from any thread. When
  //! they do not, the error says why and adds the last error the consumer met (a refused SASL login or a broker
  //! certificate that does not verify names itself there, where the request alone would only time out).
  Status Reachable(std::chrono::milliseconds timeout);
  //! Leaves the group cleanly (commits stored offsets, revokes through the listener).
  void Close();

 private:
  KafkaConsumer(rd_kafka_t* rk, RebalanceListener* listener);
  static void ErrorCallback(rd_kafka_t* rk, int err, const char* reason, void* opaque);
  static void RebalanceCallback(rd_kafka_t* rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* parts,
                                void* opaque);

  rd_kafka_t* rk_;
  RebalanceListener* listener_;
  bool closed_ = false;
  KafkaClientErrors errors_;  //!< cleared when the brokers answer again
  std::string bootstrap_;     //!< bootstrap.servers, given again when no broker answers (see KafkaProducer)
  std::chrono::steady_clock::time_point next_broker_check_{};  //!< Poll()'s thread only
};

}  // namespace imgpipe
