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
constexpr auto kBrokerTimeout = std::chrono::milliseconds(10000);
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

std::string Name(const TopicPartition& tp) { return tp.topic + "/" + std::to_string(tp.partition); }

TopicPartition PartitionOf(const KafkaMessage& m) { return {std::string(m.topic()), m.partition()}; }

std::chrono::milliseconds Doubled(std::chrono::milliseconds d) {
  return std::min(d * 2, std::chrono::duration_cast<std::chrono::milliseconds>(kMaxBackoff));
}

}  // namespace

void KafkaSource::DeclareMetrics(Metrics& m) {
  m.DeclareCounter("imgpipe_kafka_records_received_total", "Stream records taken from the topics, by topic");
  m.DeclareCounter("imgpipe_kafka_records_total",
                   "Stream records finished, by topic and outcome (stored, duplicate, dead_lettered)");
  m.DeclareCounter("imgpipe_kafka_dead_letters_total", "Records sent to a dead-letter topic, by topic and reason");
  m.DeclareCounter("imgpipe_kafka_retries_total", "Record intake attempts retried after a dependency failed");
  m.DeclareCounter("imgpipe_kafka_gaps_total",
                   "Holes in a partition's offsets, by topic and kind: reread (the client skipped records, read "
                   "again) or confirmed (the log has no records there)");
  m.DeclareHistogram("imgpipe_kafka_commit_batch_records", "Records whose rows one group commit wrote",
                     {1, 2, 4, 8, 16, 32, 64, 128, 256});
  m.DeclareGauge("imgpipe_kafka_consumer_lag",
                 "Records in the partition after the last stored offset (from the last fetch's high watermark)");
  m.DeclareGauge("imgpipe_kafka_records_in_flight", "Records taken from the stream and not finished yet");
  m.DeclareGauge("imgpipe_kafka_paused",
                 "1 while the source has paused its partitions (the in-flight window stayed full too long)");
}

KafkaSource::KafkaSource(KafkaSourceOptions options, Intake& intake, MetadataStore& store, BlobStore& blobs,
                         const Clock& clock, Metrics* metrics)
    : options_(std::move(options)), intake_(intake), store_(store), blobs_(blobs), clock_(clock),
      metrics_(metrics) {}

KafkaSource::~KafkaSource() { Stop(); }

Status KafkaSource::Start() {
  KafkaProperties consumer = GroupConsumerProperties(options_.client, options_.group_id, options_.group_instance_id,
                                                     options_.max_poll_interval, options_.session_timeout);
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
  done_cv_.notify_all();
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
    for (const auto& m : tasks_) --partitions_[PartitionOf(m)].pending;
    in_flight_ -= static_cast<int>(tasks_.size());
    tasks_.clear();
  }
  if (consumer_) consumer_->Close();
  LogInfo("kafka stream source stopped", {});
}

Status KafkaSource::Health(std::chrono::milliseconds timeout) {
  if (!consumer_) return MakeError(ErrorKind::kUnavailable, "the Kafka stream source is not running");
  return consumer_->Reachable(timeout);
}

// ---------------------------------------------------------------------------------------------------------------------
// Polling (one thread)

void KafkaSource::PollLoop() {
  auto next_lag = std::chrono::steady_clock::now();
  while (!stopping_) {
    if (std::chrono::steady_clock::now() >= next_lag) {
      UpdateLag();
      next_lag = std::chrono::steady_clock::now() + kLagInterval;
    }
    if (!WaitForRoom()) continue;
    auto polled = consumer_->Poll(kPollTimeout);
    if (!polled.ok()) {
      LogError("kafka stream source: the consumer failed; restart this process",
               {{"error", polled.error().message}});
      Backoff(kMaxBackoff);
      continue;
    }
    if (*polled) Admit(std::move(**polled));
  }
}

bool KafkaSource::WaitForRoom() {
  std::unique_lock lock(mu_);
  if (metrics_) metrics_->Set("imgpipe_kafka_records_in_flight", {}, in_flight_);
  if (in_flight_ < options_.max_in_flight) {
    full_since_.reset();
    if (paused_) {
      lock.unlock();
      SetPaused(false);
    }
    return true;
  }
  const auto now = std::chrono::steady_clock::now();
  if (!full_since_) full_since_ = now;
  // Not polling is the cheap back-pressure (librdkafka keeps its fetched records; no pause/resume stall), but the
  // group expects a poll within max.poll.interval.ms: if the window stays full that long (storage or the database
  // is away), pause and poll.
  if (!paused_ && now - *full_since_ >= options_.max_poll_interval / 2) {
    lock.unlock();
    SetPaused(true);
    return true;
  }
  if (paused_) return true;
  done_cv_.wait_for(lock, kPollTimeout,
                    [this] { return stopping_.load() || in_flight_ < options_.max_in_flight; });
  return false;
}

void KafkaSource::SetPaused(bool pause) {
  std::vector<TopicPartition> assigned;
  {
    std::lock_guard lock(mu_);
    if (paused_ == pause) return;
    paused_ = pause;
    for (const auto& [tp, state] : partitions_) assigned.push_back(tp);
  }
  if (pause) {
    LogWarn("kafka stream source: records wait longer than half of ingest.max_poll_interval; pausing the partitions",
            {{"in_flight", options_.max_in_flight}});
  }
  Status s = pause ? consumer_->Pause(assigned) : consumer_->Resume(assigned);
  if (!s.ok()) LogWarn("kafka stream source: cannot pause or resume", {{"error", s.error().message}});
  if (metrics_) metrics_->Set("imgpipe_kafka_paused", {}, pause ? 1 : 0);
}

bool KafkaSource::Continuous(const TopicPartition& tp, const KafkaMessage& message) {
  const int64_t offset = message.offset();
  std::optional<int64_t> expected;
  bool seek_ahead = false;
  {
    std::lock_guard lock(mu_);
    PartitionState& p = partitions_[tp];
    expected = p.expected;
    seek_ahead = options_.testing_seek_ahead > 0 && !p.seeked_ahead;
  }
  if (!expected) {
    // The first record since the partition became ours: it must be the one the group stopped at.
    auto start = consumer_->StartOffset(tp, kBrokerTimeout);
    if (!start.ok()) {
      LogWarn("kafka stream source: cannot check where a partition starts; reading it again",
              {{"partition", Name(tp)}, {"error", start.error().message}});
      if (Status s = consumer_->Seek(tp, offset, kBrokerTimeout); !s.ok()) {
        LogWarn("kafka stream source: cannot seek", {{"partition", Name(tp)}, {"error", s.error().message}});
      }
      Backoff(kFirstBackoff);
      return false;
    }
    std::lock_guard lock(mu_);
    PartitionState& p = partitions_[tp];
    p.expected = expected = *start;
    stored_[tp] = *start;
  }
  if (seek_ahead) {
    {
      std::lock_guard lock(mu_);
      partitions_[tp].seeked_ahead = true;
    }
    LogWarn("kafka stream source: testing.kafka_seek_ahead moves the fetch position ahead",
            {{"partition", Name(tp)}, {"from", *expected}, {"records", options_.testing_seek_ahead}});
    if (Status s = consumer_->Seek(tp, *expected + options_.testing_seek_ahead, kBrokerTimeout); !s.ok()) {
      LogWarn("kafka stream source: cannot seek", {{"partition", Name(tp)}, {"error", s.error().message}});
    }
    return false;
  }
  if (offset == *expected) return true;
  if (offset < *expected) {
    // Delivered again by the client (it rewinds after some pause/resume and rebalance paths); the first delivery
    // is in progress or finished.
    LogDebug("kafka stream source: a record came twice; the second is dropped", {{"record", Position(message)}});
    return false;
  }
  std::unique_lock lock(mu_);
  PartitionState& p = partitions_[tp];
  if (p.hole && *p.hole == *expected && p.hole_witness == offset) {
    // Read from the hole's start again and this record came first once more: the log has nothing in between.
    p.hole.reset();
    p.hole_witness.reset();
    lock.unlock();
    LogWarn("kafka stream source: the partition has no records between two offsets (compaction, transaction markers, "
            "or retention deleted them before they were read); going on",
            {{"partition", Name(tp)}, {"from", *expected}, {"to", offset - 1}});
    if (metrics_) metrics_->Add("imgpipe_kafka_gaps_total", {{"topic", tp.topic}, {"kind", "confirmed"}});
    return true;
  }
  // The client passed over records: never let the stored offset move past them, and read them again. If this same
  // record comes first again after the re-read, the gap is real.
  p.hole = *expected;
  p.hole_witness = offset;
  lock.unlock();
  LogWarn("kafka stream source: records were skipped by the client; reading them again",
          {{"partition", Name(tp)}, {"expected", *expected}, {"received", offset}});
  if (metrics_) metrics_->Add("imgpipe_kafka_gaps_total", {{"topic", tp.topic}, {"kind", "reread"}});
  if (Status s = consumer_->Seek(tp, *expected, kBrokerTimeout); !s.ok()) {
    LogError("kafka stream source: cannot seek back to skipped records; their partition's offset stays before them "
             "until this process restarts",
             {{"partition", Name(tp)}, {"error", s.error().message}});
  }
  return false;
}

void KafkaSource::Admit(KafkaMessage message) {
  TopicPartition tp = PartitionOf(message);
  if (metrics_) metrics_->Add("imgpipe_kafka_records_received_total", {{"topic", tp.topic}});
  if (!Continuous(tp, message)) return;
  {
    std::lock_guard lock(mu_);
    PartitionState& p = partitions_[tp];
    if (p.hole && message.offset() == *p.hole) {
      // The first skipped record is back: the hole is filled from here on.
      p.hole.reset();
      p.hole_witness.reset();
    }
    p.expected = message.offset() + 1;
    p.offsets[message.offset()] = false;
    ++p.pending;
    ++in_flight_;
    tasks_.push_back(std::move(message));
  }
  work_cv_.notify_one();
}

// ---------------------------------------------------------------------------------------------------------------------
// Intake (options_.threads threads) and the group commit

void KafkaSource::WorkerLoop() {
  for (;;) {
    std::unique_lock lock(mu_);
    work_cv_.wait(lock, [this] { return workers_done_ || !tasks_.empty(); });
    if (workers_done_) return;
    KafkaMessage message = std::move(tasks_.front());
    tasks_.pop_front();
    lock.unlock();
    std::optional<StagedImage> staged;
    switch (TakeIn(message, &staged)) {
      case Outcome::kStaged:
        CommitGroup(Staged{std::move(message), std::move(*staged)});
        break;
      case Outcome::kDuplicate:
        Finish(message, "duplicate");
        break;
      case Outcome::kDeadLettered:
        Finish(message, "dead_lettered");
        break;
      case Outcome::kAbandoned:
        Abandon(message);
        break;
    }
  }
}

void KafkaSource::CommitGroup(Staged staged) {
  std::unique_lock lock(commit_mu_);
  commit_pending_.push_back(std::move(staged));
  // Another thread is committing: it takes this record with its next batch, and this thread goes on staging.
  if (committing_) return;
  committing_ = true;
  while (!commit_pending_.empty()) {
    std::vector<Staged> batch;
    batch.swap(commit_pending_);
    lock.unlock();
    CommitBatch(batch);
    lock.lock();
  }
  committing_ = false;
}

void KafkaSource::CommitBatch(std::vector<Staged>& batch) {
  std::vector<StagedImage*> images;
  for (Staged& s : batch) images.push_back(&s.image);
  if (metrics_) metrics_->Observe("imgpipe_kafka_commit_batch_records", {}, static_cast<double>(batch.size()));
  auto backoff = kFirstBackoff;
  for (;;) {
    auto fresh = intake_.CommitStaged(images);
    if (fresh.ok()) {
      for (size_t i = 0; i < batch.size(); ++i) Finish(batch[i].message, (*fresh)[i] ? "stored" : "duplicate");
      return;
    }
    if (IsTransient(fresh.error().kind)) {
      LogWarn("kafka stream source: committing rows failed; retrying",
              {{"records", static_cast<int>(batch.size())}, {"error", fresh.error().message}});
      if (metrics_) metrics_->Add("imgpipe_kafka_retries_total", {});
      if (!Backoff(backoff)) {
        for (Staged& s : batch) Abandon(s.message);
        return;
      }
      backoff = Doubled(backoff);
      continue;
    }
    break;
  }
  // A refusal that is not the database being away belongs to one of the rows: commit them one by one, so only the
  // record at fault goes to the dead-letter topic.
  for (Staged& s : batch) {
    auto one = intake_.CommitStaged({&s.image});
    if (one.ok()) {
      Finish(s.message, (*one)[0] ? "stored" : "duplicate");
    } else if (!IsTransient(one.error().kind) && DeadLetter(s.message, one.error())) {
      Finish(s.message, "dead_lettered");
    } else {
      // The database went away meanwhile: the record comes again from the stored offset (after a restart or a
      // rebalance); its offset does not move before then.
      LogWarn("kafka stream source: a record's row could not be committed; it stays unfinished",
              {{"record", Position(s.message)}, {"error", one.error().message}});
      Abandon(s.message);
    }
  }
}

void KafkaSource::Finish(const KafkaMessage& message, std::string_view outcome) {
  TopicPartition tp = PartitionOf(message);
  if (metrics_) metrics_->Add("imgpipe_kafka_records_total", {{"topic", tp.topic}, {"outcome", std::string(outcome)}});
  std::lock_guard lock(mu_);
  PartitionState& p = partitions_[tp];
  p.offsets[message.offset()] = true;
  --p.pending;
  --in_flight_;
  MoveHead(tp, p);
  done_cv_.notify_all();
}

void KafkaSource::Abandon(const KafkaMessage& message) {
  // Stopping (or the row could not be written): the record stays unfinished, so its offset and every later one of
  // the partition are not stored, and it comes again.
  std::lock_guard lock(mu_);
  PartitionState& p = partitions_[PartitionOf(message)];
  --p.pending;
  --in_flight_;
  done_cv_.notify_all();
}

void KafkaSource::MoveHead(const TopicPartition& tp, PartitionState& p) {
  std::optional<int64_t> next;
  while (!p.offsets.empty() && p.offsets.begin()->second && !(p.hole && p.offsets.begin()->first >= *p.hole)) {
    next = p.offsets.begin()->first + 1;
    p.offsets.erase(p.offsets.begin());
  }
  if (!next) return;
  stored_[tp] = *next;
  if (Status s = consumer_->StoreOffset(tp, *next); !s.ok()) {
    // The partition was taken away (its records come again elsewhere, and find their rows).
    LogWarn("kafka stream source: cannot store an offset", {{"error", s.error().message}});
  }
}

bool KafkaSource::Backoff(std::chrono::milliseconds d) {
  std::unique_lock lock(mu_);
  done_cv_.wait_for(lock, d, [this] { return stopping_.load(); });
  return !stopping_;
}

KafkaSource::Outcome KafkaSource::TakeIn(const KafkaMessage& message, std::optional<StagedImage>* staged) {
  auto dead = [&](const Error& e) { return DeadLetter(message, e) ? Outcome::kDeadLettered : Outcome::kAbandoned; };
  std::vector<StreamHeader> headers;
  for (auto& h : message.headers()) headers.push_back({std::move(h.name), std::move(h.value)});
  auto record = ParseStreamRecord(headers, message.value(), options_.record);
  if (!record.ok()) return dead(record.error());

  const int64_t ts = message.timestamp_ms();
  const TimePoint now = clock_.Now();
  const TimePoint stamped{std::chrono::milliseconds(ts)};
  if (ts < 0 || stamped > now + kMaxFutureSkew) {
    return dead(MakeError(ErrorKind::kInvalidArgument,
                          "the record's timestamp is missing or more than a day ahead of this server's clock",
                          "bad_timestamp"));
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
    backoff = Doubled(backoff);
    return go_on;
  };
  for (;;) {
    // A redelivered record whose row exists is done: nothing is written again (not even the same bytes).
    auto existing = store_.GetImage(id);
    if (existing.ok()) return Outcome::kDuplicate;
    if (existing.error().kind != ErrorKind::kNotFound) {
      if (!retry(existing.error())) return Outcome::kAbandoned;
      continue;
    }
    const auto keep = intake_.options().retention_originals;
    if (keep.count() > 0 && stamped + keep <= now) {
      return dead(MakeError(ErrorKind::kInvalidArgument,
                            "the record is older than the retention window (retention.originals), which counts from "
                            "its timestamp",
                            "expired"));
    }

    std::unique_ptr<Spool> spool = intake_.BeginSpool();
    Status filled = Ok();
    if (record->claim) {
      auto reader = blobs_.OpenRead(record->claim->container, record->claim->key);
      if (!reader.ok()) {
        if (reader.error().kind == ErrorKind::kNotFound) {
          return dead(MakeError(ErrorKind::kNotFound,
                                "the claim check names " + record->claim->container + "/" + record->claim->key +
                                    ", which does not exist",
                                "claim_not_found"));
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
        if (!retry(filled.error())) return Outcome::kAbandoned;
        continue;
      }
      return dead(filled.error());
    }
    IntakeRequest request;
    request.source = "kafka";
    request.topic = std::string(message.topic());
    request.source_ref = record->source_id ? *record->source_id : Position(message);
    request.metadata_json = record->metadata_json;
    request.pipeline = record->pipeline;
    request.id = id;
    request.retention_start = stamped;
    Result<StagedImage> stored = intake_.Stage(*spool, request);
    if (stored.ok()) {
      staged->emplace(std::move(stored).value());
      return Outcome::kStaged;
    }
    if (IsTransient(stored.error().kind)) {
      if (!retry(stored.error())) return Outcome::kAbandoned;
      continue;
    }
    return dead(stored.error());
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
    backoff = Doubled(backoff);
  }
  if (metrics_) {
    metrics_->Add("imgpipe_kafka_dead_letters_total",
                  {{"topic", std::string(message.topic())}, {"reason", std::string(reason.Code())}});
  }
  return true;
}

// ---------------------------------------------------------------------------------------------------------------------
// Lag and rebalancing

void KafkaSource::UpdateLag() {
  if (!metrics_) return;
  std::vector<TopicPartition> unknown;
  {
    std::lock_guard lock(mu_);
    for (const auto& [tp, p] : partitions_) {
      if (!p.expected) unknown.push_back(tp);
    }
  }
  // A partition that has delivered nothing yet (empty, or still being fetched) still has a lag for the autoscaler:
  // from where the group starts on it. Asked once per partition; its first record then needs no second look-up.
  for (const auto& tp : unknown) {
    auto start = consumer_->StartOffset(tp, kFirstBackoff * 20);
    if (!start.ok()) continue;
    std::lock_guard lock(mu_);
    auto it = partitions_.find(tp);
    if (it == partitions_.end() || it->second.expected) continue;
    it->second.expected = *start;
    stored_[tp] = *start;
  }
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
    for (const auto& tp : partitions) partitions_[tp] = PartitionState{};
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
