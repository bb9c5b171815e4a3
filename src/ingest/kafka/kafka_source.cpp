#include "ingest/kafka/kafka_source.hpp"

#include <algorithm>
#include <array>

#include "core/ids.hpp"
#include "core/log.hpp"
#include "core/metrics.hpp"

namespace imgpipe {

namespace {

constexpr auto kPollTimeout = std::chrono::milliseconds(100);
constexpr auto kLagInterval = std::chrono::seconds(1);
constexpr auto kDeadLetterTimeout = std::chrono::milliseconds(30000);
constexpr auto kFirstBackoff = std::chrono::milliseconds(100);
constexpr auto kMaxBackoff = std::chrono::milliseconds(5000);
// A record stamped further ahead than this is refused: its id (and blob folder) would sit in the future.
constexpr auto kMaxFutureSkew = std::chrono::hours(24);

// Failures of a dependency (storage, database, broker) are retried and hold the partition; everything else is a
// property of the record and sends it to the dead-letter topic.
bool IsTransient(ErrorKind kind) { return kind == ErrorKind::kUnavailable || kind == ErrorKind::kRetry; }

std::string Position(const KafkaMessage& m) {
  return std::string(m.topic()) + "/" + std::to_string(m.partition()) + "/" + std::to_string(m.offset());
}

}  // namespace

void KafkaSource::DeclareMetrics(Metrics& m) {
  m.DeclareCounter("imgpipe_kafka_records_total",
                   "Stream records finished, by topic and outcome (stored, duplicate, dead_lettered)");
  m.DeclareCounter("imgpipe_kafka_dead_letters_total", "Records sent to a dead-letter topic, by topic and reason");
  m.DeclareCounter("imgpipe_kafka_retries_total", "Record intake attempts retried after a dependency failed");
  m.DeclareGauge("imgpipe_kafka_consumer_lag",
                 "Records in the partition after the last stored offset (from the last fetch's high watermark)");
  m.DeclareGauge("imgpipe_kafka_records_in_flight", "Records taken from the stream and not finished yet");
  m.DeclareGauge("imgpipe_kafka_paused", "1 while the source has paused its partitions for back-pressure");
}

KafkaSource::KafkaSource(KafkaSourceOptions options, Intake& intake, MetadataStore& store, BlobStore& blobs,
                         const Clock& clock, Metrics* metrics)
    : options_(std::move(options)), intake_(intake), store_(store), blobs_(blobs), clock_(clock),
      metrics_(metrics) {}

KafkaSource::~KafkaSource() { Stop(); }

Status KafkaSource::Start() {
  KafkaProperties consumer = options_.client;
  consumer["group.id"] = options_.group_id;
  if (!options_.group_instance_id.empty()) consumer["group.instance.id"] = options_.group_instance_id;
  consumer["max.poll.interval.ms"] = std::to_string(options_.max_poll_interval.count());
  IMGPIPE_ASSIGN_OR_RETURN(consumer_, KafkaConsumer::Create(consumer, this));

  KafkaProperties producer = options_.client;
  producer["message.timeout.ms"] = std::to_string(kDeadLetterTimeout.count());
  IMGPIPE_ASSIGN_OR_RETURN(dlq_, KafkaProducer::Create(producer));

  IMGPIPE_TRY(consumer_->Subscribe(options_.topics));
  for (int i = 0; i < options_.threads; ++i) workers_.emplace_back([this] { WorkerLoop(); });
  poller_ = std::thread([this] { PollLoop(); });
  std::string topics;
  for (const auto& t : options_.topics) topics += (topics.empty() ? "" : ",") + t;
  LogInfo("kafka stream source started", {{"topics", topics},
                                          {"group", options_.group_id},
                                          {"threads", options_.threads},
                                          {"max_in_flight", options_.max_in_flight}});
  return Ok();
}

void KafkaSource::Stop() {
  if (stopping_.exchange(true)) return;
  if (poller_.joinable()) poller_.join();
  {
    std::lock_guard lock(mu_);
    workers_done_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
  {
    // Records never started come again from the last stored offset.
    std::lock_guard lock(mu_);
    for (const auto& m : tasks_) --partitions_[{std::string(m.topic()), m.partition()}].pending;
    in_flight_ -= static_cast<int>(tasks_.size());
    tasks_.clear();
  }
  if (consumer_) consumer_->Close();
  LogInfo("kafka stream source stopped", {});
}

void KafkaSource::PollLoop() {
  auto next_lag = std::chrono::steady_clock::now();
  while (!stopping_) {
    auto polled = consumer_->Poll(kPollTimeout);
    if (!polled.ok()) {
      LogError("kafka stream source: the consumer failed; restart this process",
               {{"error", polled.error().message}});
      Backoff(kMaxBackoff);
      continue;
    }
    if (*polled) Dispatch(std::move(**polled));
    ApplyBackPressure();
    if (std::chrono::steady_clock::now() >= next_lag) {
      UpdateLag();
      next_lag = std::chrono::steady_clock::now() + kLagInterval;
    }
  }
}

void KafkaSource::Dispatch(KafkaMessage message) {
  TopicPartition tp{std::string(message.topic()), message.partition()};
  {
    std::lock_guard lock(mu_);
    PartitionState& p = partitions_[tp];
    p.offsets[message.offset()] = false;
    ++p.pending;
    stored_.emplace(tp, message.offset());
    ++in_flight_;
    tasks_.push_back(std::move(message));
  }
  work_cv_.notify_one();
}

void KafkaSource::WorkerLoop() {
  for (;;) {
    std::unique_lock lock(mu_);
    work_cv_.wait(lock, [this] { return workers_done_ || !tasks_.empty(); });
    if (workers_done_) return;
    KafkaMessage message = std::move(tasks_.front());
    tasks_.pop_front();
    lock.unlock();
    Process(message);
  }
}

void KafkaSource::Process(const KafkaMessage& message) {
  TopicPartition tp{std::string(message.topic()), message.partition()};
  std::string outcome = TakeIn(message);
  if (outcome.empty()) {
    // Stopping in the middle of a retry: the record stays unfinished and its offset (and every later one of the
    // partition) is not stored, so it comes again.
    std::lock_guard lock(mu_);
    --partitions_[tp].pending;
    --in_flight_;
    done_cv_.notify_all();
    return;
  }
  if (metrics_) metrics_->Add("imgpipe_kafka_records_total", {{"topic", tp.topic}, {"outcome", outcome}});
  Finish(tp, message.offset());
}

void KafkaSource::Finish(const TopicPartition& tp, int64_t offset) {
  std::lock_guard lock(mu_);
  PartitionState& p = partitions_[tp];
  p.offsets[offset] = true;
  --p.pending;
  --in_flight_;
  std::optional<int64_t> next;
  while (!p.offsets.empty() && p.offsets.begin()->second) {
    next = p.offsets.begin()->first + 1;
    p.offsets.erase(p.offsets.begin());
  }
  if (next) {
    stored_[tp] = *next;
    if (Status s = consumer_->StoreOffset(tp, *next); !s.ok()) {
      // The partition was taken away (its records come again elsewhere, and find their rows).
      LogWarn("kafka stream source: cannot store an offset", {{"error", s.error().message}});
    }
  }
  done_cv_.notify_all();
}

bool KafkaSource::Backoff(std::chrono::milliseconds d) {
  std::unique_lock lock(mu_);
  done_cv_.wait_for(lock, d, [this] { return stopping_.load(); });
  return !stopping_;
}

std::string KafkaSource::TakeIn(const KafkaMessage& message) {
  std::vector<StreamHeader> headers;
  for (auto& h : message.headers()) headers.push_back({std::move(h.name), std::move(h.value)});
  auto record = ParseStreamRecord(headers, message.value(), options_.record);
  if (!record.ok()) return DeadLetter(message, record.error()) ? "dead_lettered" : "";

  const int64_t ts = message.timestamp_ms();
  const TimePoint now = clock_.Now();
  const TimePoint stamped{std::chrono::milliseconds(ts)};
  if (ts < 0 || stamped > now + kMaxFutureSkew) {
    Error e = MakeError(ErrorKind::kInvalidArgument,
                        "the record's timestamp is missing or more than a day ahead of this server's clock",
                        "bad_timestamp");
    return DeadLetter(message, e) ? "dead_lettered" : "";
  }
  // Same record, same id: the timestamp is part of the record, so a redelivery derives the same id.
  const std::string seed = record->source_id ? "source-id:" + *record->source_id : "position:" + Position(message);
  const ImageId id = DeterministicImageId(stamped, seed);

  auto backoff = kFirstBackoff;
  auto retry = [&](const Error& e) {
    LogWarn("kafka stream source: taking in a record failed; retrying",
            {{"record", Position(message)}, {"image_id", id.value()}, {"error", e.message}});
    if (metrics_) metrics_->Add("imgpipe_kafka_retries_total", {});
    bool go_on = Backoff(backoff);
    backoff = std::min(backoff * 2, std::chrono::duration_cast<std::chrono::milliseconds>(kMaxBackoff));
    return go_on;
  };
  for (;;) {
    // A redelivered record whose row exists is done: nothing is written again (not even the same bytes).
    auto existing = store_.GetImage(id);
    if (existing.ok()) return "duplicate";
    if (existing.error().kind != ErrorKind::kNotFound) {
      if (!retry(existing.error())) return "";
      continue;
    }
    const auto keep = intake_.options().retention_originals;
    if (keep.count() > 0 && stamped + keep <= now) {
      Error e = MakeError(ErrorKind::kInvalidArgument,
                          "the record is older than the retention window (retention.originals), which counts from "
                          "its timestamp",
                          "expired");
      return DeadLetter(message, e) ? "dead_lettered" : "";
    }

    std::unique_ptr<Spool> spool = intake_.BeginSpool();
    Status filled = Ok();
    if (record->claim) {
      auto reader = blobs_.OpenRead(record->claim->container, record->claim->key);
      if (!reader.ok()) {
        if (reader.error().kind == ErrorKind::kNotFound) {
          Error e = MakeError(ErrorKind::kNotFound,
                              "the claim check names " + record->claim->container + "/" + record->claim->key +
                                  ", which does not exist",
                              "claim_not_found");
          return DeadLetter(message, e) ? "dead_lettered" : "";
        }
        filled = reader.error();
      } else {
        std::array<char, 256 * 1024> buf;
        for (;;) {
          auto n = (*reader)->Read(buf);
          if (!n.ok()) {
            filled = n.error();
            break;
          }
          if (*n == 0) break;
          filled = spool->Append(std::string_view(buf.data(), *n));
          if (filled.ok() && spool->NeedsFlush()) filled = spool->Flush();
          if (!filled.ok()) break;
        }
      }
    } else {
      std::string_view value = message.value();
      while (filled.ok() && !value.empty()) {
        std::string_view chunk = value.substr(0, Spool::kMemoryBytes);
        value.remove_prefix(chunk.size());
        filled = spool->Append(chunk);
        if (filled.ok() && spool->NeedsFlush()) filled = spool->Flush();
      }
    }
    if (!filled.ok()) {
      if (IsTransient(filled.error().kind)) {
        if (!retry(filled.error())) return "";
        continue;
      }
      return DeadLetter(message, filled.error()) ? "dead_lettered" : "";
    }
    IntakeRequest request;
    request.source = "kafka";
    request.topic = std::string(message.topic());
    request.source_ref = record->source_id ? *record->source_id : Position(message);
    request.metadata_json = record->metadata_json;
    request.pipeline = record->pipeline;
    request.id = id;
    request.retention_start = stamped;
    Result<IntakeResult> accepted = intake_.Accept(*spool, request);
    if (accepted.ok()) return accepted->replayed ? "duplicate" : "stored";
    if (IsTransient(accepted.error().kind)) {
      if (!retry(accepted.error())) return "";
      continue;
    }
    return DeadLetter(message, accepted.error()) ? "dead_lettered" : "";
  }
}

bool KafkaSource::DeadLetter(const KafkaMessage& message, const Error& reason) {
  const std::string topic = DeadLetterTopic(message.topic());
  std::vector<KafkaHeader> headers = message.headers();
  headers.push_back({"imgpipe-dlq-reason", std::string(reason.Code())});
  headers.push_back({"imgpipe-dlq-message", reason.message});
  headers.push_back({"imgpipe-dlq-topic", std::string(message.topic())});
  headers.push_back({"imgpipe-dlq-partition", std::to_string(message.partition())});
  headers.push_back({"imgpipe-dlq-offset", std::to_string(message.offset())});
  headers.push_back({"imgpipe-dlq-timestamp", std::to_string(message.timestamp_ms())});
  LogWarn("kafka stream source: record sent to the dead-letter topic",
          {{"record", Position(message)}, {"reason", reason.Code()}, {"error", reason.message}, {"dlq", topic}});
  std::string_view value = message.value();
  auto backoff = kFirstBackoff;
  for (;;) {
    Status sent = dlq_->Send(topic, message.key(), value, headers, kDeadLetterTimeout);
    if (sent.ok()) break;
    if (sent.error().kind == ErrorKind::kTooLarge && !value.empty()) {
      // The dead-letter topic takes less than the source did: keep the reason and the position, drop the bytes
      // (the original record stays in its topic until the topic's own retention removes it).
      value = {};
      headers.push_back({"imgpipe-dlq-value-dropped", "true"});
      continue;
    }
    LogWarn("kafka stream source: cannot write to the dead-letter topic; retrying",
            {{"dlq", topic}, {"error", sent.error().message}});
    if (!Backoff(backoff)) return false;
    backoff = std::min(backoff * 2, std::chrono::duration_cast<std::chrono::milliseconds>(kMaxBackoff));
  }
  if (metrics_) {
    metrics_->Add("imgpipe_kafka_dead_letters_total",
                  {{"topic", std::string(message.topic())}, {"reason", std::string(reason.Code())}});
  }
  return true;
}

void KafkaSource::ApplyBackPressure() {
  std::vector<TopicPartition> assigned;
  bool pause = false, resume = false;
  {
    std::lock_guard lock(mu_);
    if (!paused_ && in_flight_ >= options_.max_in_flight) {
      pause = paused_ = true;
    } else if (paused_ && in_flight_ <= options_.max_in_flight / 2) {
      resume = true;
      paused_ = false;
    }
    if (pause || resume) {
      for (const auto& [tp, state] : partitions_) assigned.push_back(tp);
    }
    if (metrics_) metrics_->Set("imgpipe_kafka_records_in_flight", {}, in_flight_);
  }
  if (!pause && !resume) return;
  Status s = pause ? consumer_->Pause(assigned) : consumer_->Resume(assigned);
  if (!s.ok()) LogWarn("kafka stream source: back-pressure failed", {{"error", s.error().message}});
  if (metrics_) metrics_->Set("imgpipe_kafka_paused", {}, pause ? 1 : 0);
}

void KafkaSource::UpdateLag() {
  if (!metrics_) return;
  std::map<TopicPartition, int64_t> stored;
  {
    std::lock_guard lock(mu_);
    stored = stored_;
  }
  for (const auto& [tp, next] : stored) {
    auto high = consumer_->HighWatermark(tp);
    if (!high) continue;
    metrics_->Set("imgpipe_kafka_consumer_lag", {{"topic", tp.topic}, {"partition", std::to_string(tp.partition)}},
                  static_cast<double>(std::max<int64_t>(0, *high - next)));
  }
}

void KafkaSource::OnAssigned(const std::vector<TopicPartition>& partitions) {
  bool paused;
  {
    std::lock_guard lock(mu_);
    for (const auto& tp : partitions) partitions_[tp];
    paused = paused_;
  }
  if (paused) {
    if (Status s = consumer_->Pause(partitions); !s.ok()) {
      LogWarn("kafka stream source: cannot pause new partitions", {{"error", s.error().message}});
    }
  }
}

void KafkaSource::OnRevoked(const std::vector<TopicPartition>& partitions) {
  // Their records in progress finish first, so their offsets are stored while the partitions are still ours.
  std::unique_lock lock(mu_);
  done_cv_.wait(lock, [&] {
    return std::all_of(partitions.begin(), partitions.end(), [&](const TopicPartition& tp) {
      auto it = partitions_.find(tp);
      return it == partitions_.end() || it->second.pending <= 0;
    });
  });
  for (const auto& tp : partitions) {
    partitions_.erase(tp);
    stored_.erase(tp);
    if (metrics_) {
      metrics_->Set("imgpipe_kafka_consumer_lag", {{"topic", tp.topic}, {"partition", std::to_string(tp.partition)}},
                    0);
    }
  }
}

}  // namespace imgpipe
