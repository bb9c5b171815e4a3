#include "kafka/kafka_client.hpp"

#include <algorithm>
#include <condition_variable>
#include <mutex>

#include "core/log.hpp"

namespace imgpipe {

namespace {

constexpr size_t kErrorBuffer = 512;

struct ConfDeleter {
  void operator()(rd_kafka_conf_t* c) const { rd_kafka_conf_destroy(c); }
};
using ConfPtr = std::unique_ptr<rd_kafka_conf_t, ConfDeleter>;

struct PartitionListDeleter {
  void operator()(rd_kafka_topic_partition_list_t* l) const { rd_kafka_topic_partition_list_destroy(l); }
};
using PartitionListPtr = std::unique_ptr<rd_kafka_topic_partition_list_t, PartitionListDeleter>;

PartitionListPtr ToList(const std::vector<TopicPartition>& partitions) {
  PartitionListPtr list(rd_kafka_topic_partition_list_new(static_cast<int>(partitions.size())));
  for (const auto& tp : partitions) rd_kafka_topic_partition_list_add(list.get(), tp.topic.c_str(), tp.partition);
  return list;
}

std::vector<TopicPartition> FromList(const rd_kafka_topic_partition_list_t* list) {
  std::vector<TopicPartition> out;
  for (int i = 0; i < list->cnt; ++i) out.push_back({list->elems[i].topic, list->elems[i].partition});
  return out;
}

// Properties whose values must never reach a log line or an error message.
bool IsSecret(std::string_view name) {
  return name.find("password") != std::string_view::npos || name.find("secret") != std::string_view::npos ||
         name.ends_with(".key.pem") || name == "ssl.key.password";
}

// librdkafka's own log lines go to ours; level is syslog's (3 error, 4 warning, 6 info, 7 debug).
void LogCallback(const rd_kafka_t* rk, int level, const char* facility, const char* buf) {
  boost::json::object fields{{"client", rd_kafka_name(rk)}, {"facility", facility}, {"detail", buf}};
  if (level <= 3) {
    LogError("kafka client", std::move(fields));
  } else if (level <= 4) {
    LogWarn("kafka client", std::move(fields));
  } else {
    LogDebug("kafka client", std::move(fields));
  }
}

Result<ConfPtr> MakeConf(const KafkaProperties& properties) {
  ConfPtr conf(rd_kafka_conf_new());
  char err[kErrorBuffer];
  for (const auto& [name, value] : properties) {
    if (rd_kafka_conf_set(conf.get(), name.c_str(), value.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
      return MakeError(ErrorKind::kInvalidArgument,
                       "Kafka client property " + name + (IsSecret(name) ? "" : " = \"" + value + "\"") +
                           " was refused: " + err + " (see the [kafka] section in docs/OPERATIONS.md)",
                       "invalid_config");
    }
  }
  rd_kafka_conf_set_log_cb(conf.get(), LogCallback);
  return conf;
}

// The state of one Send(), shared with the delivery callback, which may run after Send() gave up waiting.
struct Delivery {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
};

void DeliveryCallback(rd_kafka_t*, const rd_kafka_message_t* msg, void*) {
  auto* holder = static_cast<std::shared_ptr<Delivery>*>(msg->_private);
  if (holder == nullptr) return;
  {
    std::lock_guard lock((*holder)->mu);
    (*holder)->done = true;
    (*holder)->err = msg->err;
  }
  (*holder)->cv.notify_all();
  delete holder;
}

// librdkafka forgets every broker when a metadata answer lists none (a broker shutting down can give one), and then
// bootstraps again only after minutes; adding the servers back makes it connect now. Servers it still knows are not
// added twice.
void AddBootstrapServers(rd_kafka_t* rk, const std::string& bootstrap) {
  if (!bootstrap.empty()) rd_kafka_brokers_add(rk, bootstrap.c_str());
}

std::string BootstrapOf(const KafkaProperties& properties) {
  const auto it = properties.find("bootstrap.servers");
  return it == properties.end() ? std::string() : it->second;
}

}  // namespace

KafkaProperties KafkaClientProperties(const Config& config) {
  KafkaProperties p;
  p["bootstrap.servers"] = config.kafka_brokers;
  p["client.id"] = config.kafka_client_id;
  p["security.protocol"] = config.kafka_security_protocol;
  if (!config.kafka_sasl_mechanism.empty()) p["sasl.mechanisms"] = config.kafka_sasl_mechanism;
  if (!config.kafka_sasl_username.empty()) p["sasl.username"] = config.kafka_sasl_username;
  if (!config.kafka_sasl_password.empty()) p["sasl.password"] = config.kafka_sasl_password;
  if (!config.kafka_ssl_ca_location.empty()) p["ssl.ca.location"] = config.kafka_ssl_ca_location;
  if (!config.kafka_ssl_certificate_location.empty()) {
    p["ssl.certificate.location"] = config.kafka_ssl_certificate_location;
  }
  if (!config.kafka_ssl_key_location.empty()) p["ssl.key.location"] = config.kafka_ssl_key_location;
  return p;
}

ErrorKind KafkaErrorKind(rd_kafka_resp_err_t err) {
  switch (err) {
    case RD_KAFKA_RESP_ERR_NO_ERROR:
      return ErrorKind::kInternal;  // not an error; callers never map it
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
      return ErrorKind::kTooLarge;
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR_INVALID_CONFIG:
      return ErrorKind::kInvalidArgument;
    case RD_KAFKA_RESP_ERR__AUTHENTICATION:
    case RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
      return ErrorKind::kPermissionDenied;
    case RD_KAFKA_RESP_ERR__FATAL:
    case RD_KAFKA_RESP_ERR__FENCED:
    case RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID:
      return ErrorKind::kInternal;
    default:
      // Transport, timeouts, leader changes, coordinator moves, queue full: the broker or the network, for now.
      return ErrorKind::kUnavailable;
  }
}

Error KafkaError(rd_kafka_resp_err_t err, std::string_view what) {
  std::string message = std::string(what) + ": " + rd_kafka_err2str(err);
  if (err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE) {
    message += "; raise message.max.bytes on the topic (and the broker's socket.request.max.bytes) or send the image "
               "as a claim check (docs/OPERATIONS.md)";
  }
  return MakeError(KafkaErrorKind(err), std::move(message));
}

// ---------------------------------------------------------------------------------------------------------------------
// KafkaMessage

std::string_view KafkaMessage::topic() const { return rd_kafka_topic_name(msg_->rkt); }

int64_t KafkaMessage::timestamp_ms() const {
  rd_kafka_timestamp_type_t type;
  return rd_kafka_message_timestamp(msg_.get(), &type);
}

std::string_view KafkaMessage::value() const {
  if (msg_->payload == nullptr) return {};
  return {static_cast<const char*>(msg_->payload), msg_->len};
}

std::optional<std::string_view> KafkaMessage::key() const {
  if (msg_->key == nullptr) return std::nullopt;
  return std::string_view(static_cast<const char*>(msg_->key), msg_->key_len);
}

std::vector<KafkaHeader> KafkaMessage::headers() const {
  std::vector<KafkaHeader> out;
  rd_kafka_headers_t* hdrs = nullptr;
  if (rd_kafka_message_headers(msg_.get(), &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR) return out;
  const char* name = nullptr;
  const void* value = nullptr;
  size_t size = 0;
  for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; ++i) {
    KafkaHeader h;
    h.name = name;
    if (value != nullptr) h.value = std::string(static_cast<const char*>(value), size);
    out.push_back(std::move(h));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------------
// KafkaProducer

Result<std::unique_ptr<KafkaProducer>> KafkaProducer::Create(const KafkaProperties& properties) {
  KafkaProperties p = properties;
  // Safe defaults; a caller's explicit value wins.
  p.emplace("acks", "all");
  p.emplace("enable.idempotence", "true");
  p.emplace("linger.ms", "5");
  IMGPIPE_ASSIGN_OR_RETURN(ConfPtr conf, MakeConf(p));
  rd_kafka_conf_set_dr_msg_cb(conf.get(), DeliveryCallback);
  char err[kErrorBuffer];
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf.get(), err, sizeof err);
  if (rk == nullptr) {
    return MakeError(ErrorKind::kInvalidArgument, std::string("cannot create a Kafka producer: ") + err);
  }
  conf.release();  // owned by rk now
  return std::unique_ptr<KafkaProducer>(new KafkaProducer(rk, BootstrapOf(p)));
}

void KafkaClientErrors::Record(rd_kafka_resp_err_t code, const char* reason) {
  std::lock_guard lock(mu_);
  // A refused login or a failed TLS handshake explains what follows it (the connection drops: "transport failure",
  // then "all brokers down"): kept until Clear(), so the cause is what gets reported.
  if (IsCredentials(last_.code)) return;
  last_ = {code, reason ? reason : ""};
}

KafkaClientErrors::Last KafkaClientErrors::Get() const {
  std::lock_guard lock(mu_);
  return last_;
}

void KafkaClientErrors::Clear() {
  std::lock_guard lock(mu_);
  last_ = {};
}

bool KafkaClientErrors::IsCredentials(rd_kafka_resp_err_t code) {
  return code == RD_KAFKA_RESP_ERR__AUTHENTICATION || code == RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED ||
         code == RD_KAFKA_RESP_ERR__SSL;
}

Result<KafkaClusterInfo> DescribeKafkaCluster(const KafkaProperties& properties, std::chrono::milliseconds timeout) {
  IMGPIPE_ASSIGN_OR_RETURN(ConfPtr conf, MakeConf(properties));
  // Outlives the client below (declared first): its error callback writes here until rd_kafka_destroy returns.
  KafkaClientErrors errors;
  rd_kafka_conf_set_opaque(conf.get(), &errors);
  rd_kafka_conf_set_error_cb(conf.get(), [](rd_kafka_t*, int code, const char* reason, void* opaque) {
    static_cast<KafkaClientErrors*>(opaque)->Record(static_cast<rd_kafka_resp_err_t>(code), reason);
  });
  char err[kErrorBuffer];
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf.get(), err, sizeof err);
  if (rk == nullptr) return MakeError(ErrorKind::kInvalidArgument, std::string("cannot create a Kafka client: ") + err);
  conf.release();  // owned by rk now
  std::unique_ptr<rd_kafka_t, void (*)(rd_kafka_t*)> handle(rk, rd_kafka_destroy);
  const rd_kafka_metadata_t* md = nullptr;
  const std::string bootstrap = BootstrapOf(properties);
  const std::string where = bootstrap.empty() ? std::string("(no bootstrap.servers)") : bootstrap;
  rd_kafka_resp_err_t e = rd_kafka_metadata(rk, /*all_topics=*/1, nullptr, &md, static_cast<int>(timeout.count()));
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
    rd_kafka_poll(rk, 0);  // serves the client's queued error events, i.e. calls the error callback
    if (auto last = errors.Get(); KafkaClientErrors::IsCredentials(last.code)) {
      return MakeError(ErrorKind::kPermissionDenied, "the Kafka brokers at " + where + " refused this client: " +
                                                         last.reason);
    }
    return KafkaError(e, "no Kafka broker at " + where + " answered a metadata request within " +
                             std::to_string(timeout.count()) + " ms");
  }
  KafkaClusterInfo info;
  for (int i = 0; i < md->broker_cnt; ++i) {
    info.brokers.push_back(std::string(md->brokers[i].host) + ":" + std::to_string(md->brokers[i].port));
  }
  info.topics = md->topic_cnt;
  rd_kafka_metadata_destroy(md);
  return info;
}

KafkaProducer::KafkaProducer(rd_kafka_t* rk, std::string bootstrap) : rk_(rk), bootstrap_(std::move(bootstrap)) {}

void KafkaProducer::RediscoverBrokers() { AddBootstrapServers(rk_, bootstrap_); }

KafkaProducer::~KafkaProducer() {
  rd_kafka_flush(rk_, 10000);
  rd_kafka_destroy(rk_);
}

namespace {

// Queues one record whose delivery callback fills `state`; an error if librdkafka refused it at once.
Status Enqueue(rd_kafka_t* rk, const std::string& topic, std::optional<std::string_view> key, std::string_view value,
               const std::vector<KafkaHeader>& headers, const std::shared_ptr<Delivery>& state) {
  rd_kafka_headers_t* hdrs = rd_kafka_headers_new(headers.size());
  for (const auto& h : headers) {
    rd_kafka_header_add(hdrs, h.name.data(), static_cast<ssize_t>(h.name.size()),
                        h.value ? h.value->data() : nullptr, h.value ? static_cast<ssize_t>(h.value->size()) : 0);
  }
  auto* holder = new std::shared_ptr<Delivery>(state);
  // librdkafka's argument macros cast without parentheses: plain variables only.
  const void* key_data = key ? key->data() : nullptr;
  const size_t key_size = key ? key->size() : 0;
  rd_kafka_resp_err_t err = rd_kafka_producev(
      rk, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_KEY(key_data, key_size),
      RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
      RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(holder), RD_KAFKA_V_END);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    rd_kafka_headers_destroy(hdrs);  // not taken over on failure
    delete holder;
    return KafkaError(err, "cannot queue a record for topic " + topic);
  }
  return Ok();
}

// Serves delivery callbacks until `state` is done or `deadline` passes; other threads' sends may serve it too.
Status AwaitDelivery(rd_kafka_t* rk, Delivery& state, const std::string& topic,
                     std::chrono::steady_clock::time_point deadline, std::chrono::milliseconds timeout) {
  std::unique_lock lock(state.mu);
  while (!state.done) {
    if (std::chrono::steady_clock::now() >= deadline) {
      return MakeError(ErrorKind::kUnavailable, "the Kafka broker did not acknowledge a record for topic " + topic +
                                                    " within " + std::to_string(timeout.count()) + " ms");
    }
    lock.unlock();
    rd_kafka_poll(rk, 20);
    lock.lock();
  }
  if (state.err != RD_KAFKA_RESP_ERR_NO_ERROR) return KafkaError(state.err, "cannot write to topic " + topic);
  return Ok();
}

}  // namespace

Status KafkaProducer::Send(const std::string& topic, std::optional<std::string_view> key, std::string_view value,
                           const std::vector<KafkaHeader>& headers, std::chrono::milliseconds timeout) {
  auto state = std::make_shared<Delivery>();
  IMGPIPE_TRY(Enqueue(rk_, topic, key, value, headers, state));
  Status delivered = AwaitDelivery(rk_, *state, topic, std::chrono::steady_clock::now() + timeout, timeout);
  if (!delivered.ok() && delivered.error().kind == ErrorKind::kUnavailable) RediscoverBrokers();
  return delivered;
}

std::vector<Status> KafkaProducer::SendMany(const std::vector<Record>& records, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<std::shared_ptr<Delivery>> states;
  std::vector<Status> out;
  states.reserve(records.size());
  out.reserve(records.size());
  for (const Record& r : records) {
    states.push_back(std::make_shared<Delivery>());
    std::optional<std::string_view> key;
    if (r.key) key = *r.key;
    out.push_back(Enqueue(rk_, r.topic, key, r.value, r.headers, states.back()));
  }
  for (size_t i = 0; i < records.size(); ++i) {
    if (out[i].ok()) out[i] = AwaitDelivery(rk_, *states[i], records[i].topic, deadline, timeout);
  }
  const bool none_through = std::none_of(out.begin(), out.end(), [](const Status& s) { return s.ok(); });
  if (!records.empty() && none_through &&
      std::any_of(out.begin(), out.end(), [](const Status& s) { return s.error().kind == ErrorKind::kUnavailable; })) {
    RediscoverBrokers();
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------------
// KafkaConsumer

Result<std::unique_ptr<KafkaConsumer>> KafkaConsumer::Create(const KafkaProperties& properties,
                                                             RebalanceListener* listener) {
  KafkaProperties p = properties;
  // Offsets move only when the caller stores them; the stored ones are committed in the background.
  p["enable.auto.offset.store"] = "false";
  p.emplace("enable.auto.commit", "true");
  p.emplace("auto.commit.interval.ms", "1000");
  p.emplace("partition.assignment.strategy", "cooperative-sticky");
  p.emplace("auto.offset.reset", "earliest");
  IMGPIPE_ASSIGN_OR_RETURN(ConfPtr conf, MakeConf(p));
  auto consumer = std::unique_ptr<KafkaConsumer>(new KafkaConsumer(nullptr, listener));
  consumer->bootstrap_ = BootstrapOf(p);
  rd_kafka_conf_set_opaque(conf.get(), consumer.get());
  rd_kafka_conf_set_rebalance_cb(conf.get(), RebalanceCallback);
  rd_kafka_conf_set_error_cb(conf.get(), ErrorCallback);
  char err[kErrorBuffer];
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf.get(), err, sizeof err);
  if (rk == nullptr) {
    return MakeError(ErrorKind::kInvalidArgument, std::string("cannot create a Kafka consumer: ") + err);
  }
  conf.release();
  consumer->rk_ = rk;
  rd_kafka_poll_set_consumer(rk);
  return consumer;
}

KafkaConsumer::KafkaConsumer(rd_kafka_t* rk, RebalanceListener* listener) : rk_(rk), listener_(listener) {}

// Client-level errors (a broker unreachable, a refused login, a certificate that does not verify): librdkafka retries
// by itself; kept for Reachable() to explain itself, and logged as librdkafka would without this callback.
void KafkaConsumer::ErrorCallback(rd_kafka_t* rk, int err, const char* reason, void* opaque) {
  static_cast<KafkaConsumer*>(opaque)->errors_.Record(static_cast<rd_kafka_resp_err_t>(err), reason);
  LogWarn("kafka: client error (librdkafka retries by itself)",
          {{"client", rd_kafka_name(rk)},
           {"error", rd_kafka_err2str(static_cast<rd_kafka_resp_err_t>(err))},
           {"detail", reason}});
}

KafkaConsumer::~KafkaConsumer() {
  if (rk_ == nullptr) return;
  Close();
  rd_kafka_destroy(rk_);
}

KafkaProperties GroupConsumerProperties(KafkaProperties client, const std::string& group_id,
                                        const std::string& group_instance_id,
                                        std::chrono::milliseconds max_poll_interval,
                                        std::chrono::milliseconds session_timeout) {
  client["group.id"] = group_id;
  if (!group_instance_id.empty()) client["group.instance.id"] = group_instance_id;
  client["max.poll.interval.ms"] = std::to_string(max_poll_interval.count());
  client["session.timeout.ms"] = std::to_string(session_timeout.count());
  return client;
}

void KafkaConsumer::RebalanceCallback(rd_kafka_t* rk, rd_kafka_resp_err_t err,
                                      rd_kafka_topic_partition_list_t* parts, void* opaque) {
  auto* self = static_cast<KafkaConsumer*>(opaque);
  const bool cooperative = std::string_view(rd_kafka_rebalance_protocol(rk)) == "COOPERATIVE";
  auto partitions = FromList(parts);
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    if (cooperative) {
      if (rd_kafka_error_t* e = rd_kafka_incremental_assign(rk, parts)) {
        LogError("kafka: cannot take new partitions", {{"error", rd_kafka_error_string(e)}});
        rd_kafka_error_destroy(e);
      }
    } else {
      rd_kafka_assign(rk, parts);
    }
    if (self->listener_) self->listener_->OnAssigned(partitions);
    LogInfo("kafka: partitions assigned", {{"count", static_cast<int>(partitions.size())}});
    return;
  }
  // Revoked (or lost): the listener finishes their work and stores offsets while they are still ours.
  if (self->listener_) self->listener_->OnRevoked(partitions);
  if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS && rd_kafka_assignment_lost(rk) == 0) {
    rd_kafka_commit(rk, nullptr, /*async=*/0);
  }
  if (cooperative) {
    if (rd_kafka_error_t* e = rd_kafka_incremental_unassign(rk, parts)) {
      LogError("kafka: cannot give partitions back", {{"error", rd_kafka_error_string(e)}});
      rd_kafka_error_destroy(e);
    }
  } else {
    rd_kafka_assign(rk, nullptr);
  }
  LogInfo("kafka: partitions revoked", {{"count", static_cast<int>(partitions.size())}});
}

Status KafkaConsumer::Subscribe(const std::vector<std::string>& topics) {
  PartitionListPtr list(rd_kafka_topic_partition_list_new(static_cast<int>(topics.size())));
  for (const auto& t : topics) rd_kafka_topic_partition_list_add(list.get(), t.c_str(), RD_KAFKA_PARTITION_UA);
  rd_kafka_resp_err_t err = rd_kafka_subscribe(rk_, list.get());
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) return KafkaError(err, "cannot subscribe to the ingest topics");
  return Ok();
}

Result<std::optional<KafkaMessage>> KafkaConsumer::Poll(std::chrono::milliseconds timeout) {
  if (const auto now = std::chrono::steady_clock::now(); now >= next_broker_check_) {
    next_broker_check_ = now + std::chrono::seconds(10);
    if (!Reachable(std::chrono::seconds(1)).ok()) AddBootstrapServers(rk_, bootstrap_);
  }
  rd_kafka_message_t* raw = rd_kafka_consumer_poll(rk_, static_cast<int>(timeout.count()));
  if (raw == nullptr) return std::optional<KafkaMessage>();
  KafkaMessage msg(raw);
  if (raw->err == RD_KAFKA_RESP_ERR_NO_ERROR) return std::optional<KafkaMessage>(std::move(msg));
  if (raw->err == RD_KAFKA_RESP_ERR__FATAL) {
    char reason[kErrorBuffer];
    rd_kafka_resp_err_t fatal = rd_kafka_fatal_error(rk_, reason, sizeof reason);
    return MakeError(KafkaErrorKind(fatal), std::string("the Kafka consumer failed for good: ") + reason);
  }
  if (raw->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
    errors_.Record(raw->err, rd_kafka_message_errstr(raw));
    LogWarn("kafka: consumer error (librdkafka retries by itself)",
            {{"error", rd_kafka_message_errstr(raw)},
             {"topic", raw->rkt ? rd_kafka_topic_name(raw->rkt) : ""},
             {"partition", raw->partition}});
  }
  return std::optional<KafkaMessage>();
}

Status KafkaConsumer::Reachable(std::chrono::milliseconds timeout) {
  const rd_kafka_metadata_t* metadata = nullptr;
  rd_kafka_resp_err_t err = rd_kafka_metadata(rk_, /*all_topics=*/0, nullptr, &metadata,
                                              static_cast<int>(timeout.count()));
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    rd_kafka_metadata_destroy(metadata);
    errors_.Clear();
    return Ok();
  }
  std::string message = std::string("the Kafka brokers do not answer: ") + rd_kafka_err2str(err);
  if (auto last = errors_.Get(); !last.reason.empty()) message += " (last client error: " + last.reason + ")";
  return MakeError(ErrorKind::kUnavailable, std::move(message));
}

Status KafkaConsumer::StoreOffset(const TopicPartition& tp, int64_t next_offset) {
  PartitionListPtr list(rd_kafka_topic_partition_list_new(1));
  rd_kafka_topic_partition_list_add(list.get(), tp.topic.c_str(), tp.partition)->offset = next_offset;
  rd_kafka_resp_err_t err = rd_kafka_offsets_store(rk_, list.get());
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) err = list->elems[0].err;
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return KafkaError(err, "cannot store the offset of " + tp.topic + "/" + std::to_string(tp.partition));
  }
  return Ok();
}

Status KafkaConsumer::CommitStored() {
  rd_kafka_resp_err_t err = rd_kafka_commit(rk_, nullptr, /*async=*/0);
  // Nothing stored since the last commit is not a failure.
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
    return KafkaError(err, "cannot commit the consumer's offsets");
  }
  return Ok();
}

Status KafkaConsumer::Pause(const std::vector<TopicPartition>& partitions) {
  auto list = ToList(partitions);
  rd_kafka_resp_err_t err = rd_kafka_pause_partitions(rk_, list.get());
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) return KafkaError(err, "cannot pause partitions");
  return Ok();
}

Status KafkaConsumer::Resume(const std::vector<TopicPartition>& partitions) {
  auto list = ToList(partitions);
  rd_kafka_resp_err_t err = rd_kafka_resume_partitions(rk_, list.get());
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) return KafkaError(err, "cannot resume partitions");
  return Ok();
}

std::optional<int64_t> KafkaConsumer::HighWatermark(const TopicPartition& tp) {
  int64_t low = 0, high = 0;
  if (rd_kafka_get_watermark_offsets(rk_, tp.topic.c_str(), tp.partition, &low, &high) !=
          RD_KAFKA_RESP_ERR_NO_ERROR ||
      high < 0) {
    return std::nullopt;
  }
  return high;
}

Result<int64_t> KafkaConsumer::StartOffset(const TopicPartition& tp, std::chrono::milliseconds timeout) {
  auto list = ToList({tp});
  rd_kafka_resp_err_t err = rd_kafka_committed(rk_, list.get(), static_cast<int>(timeout.count()));
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) err = list->elems[0].err;
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return KafkaError(err, "cannot read the committed offset of " + tp.topic + "/" + std::to_string(tp.partition));
  }
  const int64_t committed = list->elems[0].offset;  // RD_KAFKA_OFFSET_INVALID (negative) when none
  int64_t low = 0, high = 0;
  err = rd_kafka_query_watermark_offsets(rk_, tp.topic.c_str(), tp.partition, &low, &high,
                                         static_cast<int>(timeout.count()));
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return KafkaError(err, "cannot read the log start offset of " + tp.topic + "/" + std::to_string(tp.partition));
  }
  // A committed offset outside the log (records expired, or the topic was made again) makes the client start over
  // at the log start (auto.offset.reset = earliest), and so does no committed offset at all.
  return committed >= low && committed <= high ? committed : low;
}

Status KafkaConsumer::Seek(const TopicPartition& tp, int64_t offset, std::chrono::milliseconds timeout) {
  auto list = ToList({tp});
  list->elems[0].offset = offset;
  rd_kafka_error_t* error = rd_kafka_seek_partitions(rk_, list.get(), static_cast<int>(timeout.count()));
  if (error != nullptr) {
    Error e = KafkaError(rd_kafka_error_code(error), "cannot seek " + tp.topic + "/" + std::to_string(tp.partition));
    rd_kafka_error_destroy(error);
    return e;
  }
  if (list->elems[0].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return KafkaError(list->elems[0].err, "cannot seek " + tp.topic + "/" + std::to_string(tp.partition));
  }
  return Ok();
}

void KafkaConsumer::Close() {
  if (closed_ || rk_ == nullptr) return;
  closed_ = true;
  rd_kafka_resp_err_t err = rd_kafka_consumer_close(rk_);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    LogWarn("kafka: the consumer did not leave its group cleanly", {{"error", rd_kafka_err2str(err)}});
  }
}

}  // namespace imgpipe
