#include "queue/kafka/kafka_job_queue.hpp"

#include <algorithm>

#include "core/log.hpp"
#include "core/metrics.hpp"
#include "queue/kafka/job_record.hpp"

namespace imgpipe {

namespace {

constexpr auto kPollTimeout = std::chrono::milliseconds(100);
constexpr auto kLagInterval = std::chrono::seconds(1);
constexpr auto kDeadLetterBackoff = std::chrono::seconds(2);
constexpr size_t kMaxHeaderText = 512;

std::optional<std::string_view> HeaderValue(const std::vector<KafkaHeader>& headers, std::string_view name) {
  for (const KafkaHeader& h : headers) {
    if (h.name == name && h.value) return std::string_view(*h.value);
  }
  return std::nullopt;
}

std::string Clip(std::string s) {
  if (s.size() > kMaxHeaderText) s.resize(kMaxHeaderText);
  return s;
}

}  // namespace

void KafkaJobQueue::DeclareMetrics(Metrics& m) {
  m.DeclareGauge("imgpipe_jobs_consumer_lag",
                 "Jobs on the Kafka jobs topics not yet done by this worker, by topic and partition (high watermark "
                 "minus stored offset): what an autoscaler reads");
  m.DeclareGauge("imgpipe_jobs_in_flight", "Job records fetched from Kafka and not yet done (waiting or leased)");
  m.DeclareGauge("imgpipe_jobs_paused", "1 while the worker has paused its jobs partitions for back-pressure");
  m.DeclareCounter("imgpipe_jobs_dead_letters_total", "Jobs written to the jobs dead-letter topic, by reason");
  m.DeclareCounter("imgpipe_jobs_requeued_total", "Jobs re-produced to the retry topic after a failed attempt");
}

KafkaJobQueue::KafkaJobQueue(KafkaJobQueueOptions options, const Clock& clock, Metrics* metrics)
    : options_(std::move(options)),
      clock_(clock),
      metrics_(metrics),
      retry_topic_(options_.topic + ".retry"),
      dlq_topic_(options_.topic + ".dlq") {}

KafkaJobQueue::~KafkaJobQueue() { Close(); }

Status KafkaJobQueue::Start() {
  KafkaProperties p = GroupConsumerProperties(options_.client, options_.group_id, options_.group_instance_id,
                                              options_.max_poll_interval, options_.session_timeout);
  // The retry topic may come into being after we subscribed (the broker creates it on the first retry): look for it
  // every few seconds instead of librdkafka's default five minutes.
  p.emplace("topic.metadata.refresh.interval.ms", "5000");
  // librdkafka wants heartbeats well inside the session.
  p["heartbeat.interval.ms"] = std::to_string(std::max<int64_t>(100, options_.session_timeout.count() / 3));
  IMGPIPE_ASSIGN_OR_RETURN(consumer_, KafkaConsumer::Create(p, this));
  IMGPIPE_ASSIGN_OR_RETURN(producer_, KafkaProducer::Create(options_.client));
  IMGPIPE_TRY(consumer_->Subscribe({options_.topic, retry_topic_}));
  poller_ = std::thread([this] { PollLoop(); });
  LogInfo("kafka job queue: consuming",
          {{"topic", options_.topic}, {"retry_topic", retry_topic_}, {"group", options_.group_id}});
  return Ok();
}

void KafkaJobQueue::Close() {
  closing_ = true;
  ready_cv_.notify_all();
  stopping_ = true;
  if (poller_.joinable()) poller_.join();
}

void KafkaJobQueue::PollLoop() {
  auto next_lag = std::chrono::steady_clock::now();
  auto next_dead_letters = std::chrono::steady_clock::now();
  while (!stopping_) {
    auto polled = consumer_->Poll(kPollTimeout);
    if (!polled.ok()) {
      // Fatal for this client (e.g. fenced by a newer member with the same static id): report not ready.
      LogError("kafka job queue: the consumer failed", {{"error", polled.error().message}});
      failed_ = true;
      std::this_thread::sleep_for(std::chrono::seconds(1));
      continue;
    }
    if (*polled) Take(std::move(**polled));
    if (std::chrono::steady_clock::now() >= next_dead_letters) {
      SendPendingDeadLetters();
      next_dead_letters = std::chrono::steady_clock::now() + kDeadLetterBackoff;
    }
    {
      std::lock_guard lock(mu_);
      StoreHeadsLocked();
      ApplyBackPressureLocked();
    }
    if (std::chrono::steady_clock::now() >= next_lag) {
      UpdateLag();
      next_lag = std::chrono::steady_clock::now() + kLagInterval;
    }
  }
  // The drain. Records fetched and not leased are handed back (their offsets stay); the workers have finished or
  // released theirs, so the stored offsets cover exactly the finished jobs.
  SendPendingDeadLetters();
  int64_t finished = 0, handed_back = 0;
  {
    std::lock_guard lock(mu_);
    handed_back_ += static_cast<int64_t>(ready_.size() + leased_.size() + dead_letters_.size());
    ready_.clear();
    leased_.clear();
    leased_images_.clear();
    dead_letters_.clear();
    StoreHeadsLocked();
    finished = finished_;
    handed_back = handed_back_;
  }
  Status committed = consumer_->CommitStored();
  if (!committed.ok()) {
    LogWarn("kafka job queue: cannot commit the last offsets; their jobs will run again (harmlessly)",
            {{"error", committed.error().message}});
  }
  consumer_->Close();
  LogInfo("kafka job queue: left the group",
          {{"group", options_.group_id}, {"jobs_finished", finished}, {"jobs_handed_back", handed_back}});
}

void KafkaJobQueue::Take(KafkaMessage message) {
  TopicPartition tp{std::string(message.topic()), message.partition()};
  auto headers = message.headers();
  auto record = ParseJobRecord(message.value(), HeaderValue(headers, kJobAttemptsHeader),
                               HeaderValue(headers, kJobNotBeforeHeader));
  std::lock_guard lock(mu_);
  partitions_[tp].offsets[message.offset()] = false;
  if (!record.ok()) {
    // Not a job (another producer, a corrupted record): to the dead-letter topic with the reason; the partition
    // goes on.
    Entry raw;
    raw.tp = tp;
    raw.offset = message.offset();
    KafkaProducer::Record r = DeadLetterRecord(raw, record.error().message, "bad_job_record");
    if (auto key = message.key()) r.key = std::string(*key);
    r.value = std::string(message.value());
    LogWarn("kafka job queue: a record that is not a job goes to the dead-letter topic",
            {{"topic", tp.topic}, {"partition", tp.partition}, {"offset", message.offset()},
             {"error", record.error().message}});
    dead_letters_.push_back({tp, message.offset(), std::move(r)});
    return;
  }
  Entry entry;
  entry.tp = tp;
  entry.offset = message.offset();
  entry.job = std::move(record->job);
  if (record->not_before) entry.not_before = *record->not_before;
  ready_.push_back(std::move(entry));
  ready_cv_.notify_all();
}

KafkaProducer::Record KafkaJobQueue::DeadLetterRecord(const Entry& entry, const std::string& reason,
                                                      const std::string& code) {
  KafkaProducer::Record r;
  r.topic = dlq_topic_;
  if (!entry.job.image_id.value().empty()) {
    r.key = entry.job.image_id.value();
    r.value = EncodeJobValue(entry.job);
  }
  r.headers = {{"imgpipe-dlq-reason", code},
               {"imgpipe-dlq-error", Clip(reason)},
               {"imgpipe-dlq-topic", entry.tp.topic},
               {"imgpipe-dlq-partition", std::to_string(entry.tp.partition)},
               {"imgpipe-dlq-offset", std::to_string(entry.offset)},
               {std::string(kJobAttemptsHeader), std::to_string(entry.job.attempts)}};
  return r;
}

void KafkaJobQueue::SendPendingDeadLetters() {
  std::vector<PendingDeadLetter> batch;
  {
    std::lock_guard lock(mu_);
    batch.assign(dead_letters_.begin(), dead_letters_.end());
  }
  if (batch.empty()) return;
  std::vector<KafkaProducer::Record> records;
  for (const auto& d : batch) records.push_back(d.record);
  auto results = producer_->SendMany(records, options_.send_timeout);
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < batch.size(); ++i) {
    if (!results[i].ok()) {
      LogWarn("kafka job queue: cannot write a dead letter yet; its offset waits",
              {{"error", results[i].error().message}});
      continue;
    }
    auto it = std::find_if(dead_letters_.begin(), dead_letters_.end(), [&](const PendingDeadLetter& d) {
      return d.tp == batch[i].tp && d.offset == batch[i].offset;
    });
    if (it == dead_letters_.end()) continue;
    dead_letters_.erase(it);
    MarkDoneLocked(batch[i].tp, batch[i].offset);
    if (metrics_) metrics_->Add("imgpipe_jobs_dead_letters_total", {{"reason", *batch[i].record.headers[0].value}});
  }
}

void KafkaJobQueue::MarkDoneLocked(const TopicPartition& tp, int64_t offset) {
  auto it = partitions_.find(tp);
  if (it == partitions_.end()) return;  // given to another member meanwhile: it redoes the job (an upsert)
  auto off = it->second.offsets.find(offset);
  if (off != it->second.offsets.end()) off->second = true;
}

void KafkaJobQueue::StoreHeadsLocked() {
  for (auto& [tp, ps] : partitions_) {
    int64_t next = -1;
    while (!ps.offsets.empty() && ps.offsets.begin()->second) {
      next = ps.offsets.begin()->first + 1;
      ps.offsets.erase(ps.offsets.begin());
    }
    if (next < 0) continue;
    Status s = consumer_->StoreOffset(tp, next);
    if (!s.ok()) {
      LogWarn("kafka job queue: cannot store an offset; those jobs may run again (harmlessly)",
              {{"error", s.error().message}});
      continue;
    }
    ps.stored = next;
  }
}

void KafkaJobQueue::ApplyBackPressureLocked() {
  const size_t held = InFlightLocked();
  const size_t limit = static_cast<size_t>(std::max(1, options_.max_in_flight));
  bool want = closing_ || held >= limit;
  if (paused_ && !closing_ && held > limit / 2) want = true;
  if (want != paused_) {
    std::vector<TopicPartition> all;
    for (const auto& [tp, ps] : partitions_) all.push_back(tp);
    Status s = want ? consumer_->Pause(all) : consumer_->Resume(all);
    if (s.ok()) paused_ = want;
  }
  if (metrics_) {
    metrics_->Set("imgpipe_jobs_in_flight", {}, static_cast<double>(held));
    metrics_->Set("imgpipe_jobs_paused", {}, paused_ ? 1 : 0);
  }
}

void KafkaJobQueue::UpdateLag() {
  std::map<TopicPartition, int64_t> lags;
  {
    std::lock_guard lock(mu_);
    for (const auto& [tp, ps] : partitions_) {
      auto high = consumer_->HighWatermark(tp);
      if (!high) continue;
      int64_t from = ps.stored;
      if (from < 0) from = ps.offsets.empty() ? *high : ps.offsets.begin()->first;
      if (!ps.offsets.empty()) from = std::min(from, ps.offsets.begin()->first);
      lags[tp] = std::max<int64_t>(0, *high - from);
    }
  }
  int64_t total = 0;
  for (const auto& [tp, lag] : lags) {
    total += lag;
    if (metrics_) {
      metrics_->Set("imgpipe_jobs_consumer_lag", {{"topic", tp.topic}, {"partition", std::to_string(tp.partition)}},
                    static_cast<double>(lag));
    }
  }
  lag_ = total;
}

void KafkaJobQueue::OnAssigned(const std::vector<TopicPartition>& partitions) {
  std::lock_guard lock(mu_);
  for (const auto& tp : partitions) partitions_[tp];
  if (paused_) (void)consumer_->Pause(partitions);
}

void KafkaJobQueue::OnRevoked(const std::vector<TopicPartition>& partitions) {
  std::unique_lock lock(mu_);
  std::set<TopicPartition> gone(partitions.begin(), partitions.end());
  // Fetched and not leased: the new owner gets them from the stored offset.
  std::erase_if(ready_, [&](const Entry& e) { return gone.count(e.tp) > 0; });
  std::erase_if(dead_letters_, [&](const PendingDeadLetter& d) { return gone.count(d.tp) > 0; });
  auto busy = [&] {
    return std::any_of(leased_.begin(), leased_.end(), [&](const auto& kv) { return gone.count(kv.second.tp) > 0; });
  };
  if (busy()) {
    LogInfo("kafka job queue: partitions going away; finishing their jobs first", {});
    done_cv_.wait_for(lock, options_.revoke_grace, [&] { return !busy(); });
    if (busy()) {
      LogWarn("kafka job queue: jobs still running on partitions given away; the new owner may run them again",
              {{"grace_ms", static_cast<int64_t>(options_.revoke_grace.count())}});
    }
  }
  StoreHeadsLocked();
  for (const auto& tp : partitions) {
    partitions_.erase(tp);
    if (metrics_) {
      metrics_->Set("imgpipe_jobs_consumer_lag", {{"topic", tp.topic}, {"partition", std::to_string(tp.partition)}}, 0);
    }
  }
}

Result<std::vector<Job>> KafkaJobQueue::Lease(const std::string&, size_t max, std::chrono::milliseconds,
                                              std::chrono::milliseconds wait) {
  const auto deadline = std::chrono::steady_clock::now() + wait;
  std::unique_lock lock(mu_);
  while (true) {
    std::vector<Job> out;
    if (closing_ || max == 0) return out;
    const TimePoint now = clock_.Now();
    std::optional<TimePoint> next_due;
    for (auto it = ready_.begin(); it != ready_.end() && out.size() < max;) {
      if (it->not_before > now) {
        if (!next_due || it->not_before < *next_due) next_due = it->not_before;
        ++it;
        continue;
      }
      // One image's jobs share a partition (the key), so a redelivered duplicate would otherwise run beside the
      // first; it waits and then finds the image processed.
      if (leased_images_.count(it->job.image_id.value()) > 0) {
        ++it;
        continue;
      }
      Entry e = std::move(*it);
      it = ready_.erase(it);
      e.job.id = next_job_id_++;
      leased_images_.insert(e.job.image_id.value());
      out.push_back(e.job);
      leased_.emplace(e.job.id, std::move(e));
    }
    if (!out.empty()) return out;
    auto until = deadline;
    if (next_due) {
      auto due = std::chrono::steady_clock::now() +
                 std::chrono::duration_cast<std::chrono::steady_clock::duration>(*next_due - now);
      until = std::min(until, due);
    }
    if (std::chrono::steady_clock::now() >= deadline) return out;
    ready_cv_.wait_until(lock, until);
  }
}

std::optional<KafkaJobQueue::Entry> KafkaJobQueue::Unlease(const Job& job) {
  auto it = leased_.find(job.id);
  if (it == leased_.end()) return std::nullopt;
  Entry e = std::move(it->second);
  leased_.erase(it);
  auto img = leased_images_.find(e.job.image_id.value());
  if (img != leased_images_.end()) leased_images_.erase(img);
  ready_cv_.notify_all();
  done_cv_.notify_all();
  return e;
}

Status KafkaJobQueue::Ack(const Job& job) {
  std::lock_guard lock(mu_);
  auto e = Unlease(job);
  if (!e) return Ok();
  MarkDoneLocked(e->tp, e->offset);
  ++finished_;
  return Ok();
}

Status KafkaJobQueue::Retry(const Job& job, TimePoint retry_at, const std::string& error) {
  Entry entry;
  {
    std::lock_guard lock(mu_);
    auto it = leased_.find(job.id);
    if (it == leased_.end()) return Ok();
    entry = it->second;
  }
  KafkaProducer::Record r;
  r.topic = retry_topic_;
  r.key = job.image_id.value();
  Job next = entry.job;
  next.attempts = job.attempts + 1;
  r.value = EncodeJobValue(next);
  r.headers = {{std::string(kJobAttemptsHeader), std::to_string(next.attempts)},
               {std::string(kJobNotBeforeHeader), FormatRfc3339(retry_at)},
               {std::string(kJobErrorHeader), Clip(error)}};
  Status sent = producer_->Send(r.topic, *r.key, r.value, r.headers, options_.send_timeout);
  std::lock_guard lock(mu_);
  auto e = Unlease(job);
  if (!e) return Ok();
  if (sent.ok()) {
    MarkDoneLocked(e->tp, e->offset);
    if (metrics_) metrics_->Add("imgpipe_jobs_requeued_total", {});
    return Ok();
  }
  // The broker is away: keep the retry here (the original's offset stays), due at the same time.
  e->job.attempts = next.attempts;
  e->not_before = retry_at;
  ready_.push_back(std::move(*e));
  return sent.error();
}

Status KafkaJobQueue::DeadLetter(const Job& job, const std::string& reason) {
  Entry entry;
  {
    std::lock_guard lock(mu_);
    auto it = leased_.find(job.id);
    if (it == leased_.end()) return Ok();
    entry = it->second;
  }
  entry.job.attempts = job.attempts + 1;
  KafkaProducer::Record r = DeadLetterRecord(entry, reason, "processing_failed");
  Status sent = producer_->Send(r.topic, std::string_view(*r.key), r.value, r.headers, options_.send_timeout);
  std::lock_guard lock(mu_);
  auto e = Unlease(job);
  if (!e) return Ok();
  if (sent.ok()) {
    MarkDoneLocked(e->tp, e->offset);
    ++finished_;
    if (metrics_) metrics_->Add("imgpipe_jobs_dead_letters_total", {{"reason", "processing_failed"}});
    return Ok();
  }
  // Written by the polling thread once the broker is back; the offset waits for it.
  dead_letters_.push_back({e->tp, e->offset, std::move(r)});
  return sent.error();
}

Status KafkaJobQueue::ReleaseLeases(const std::string&) {
  std::lock_guard lock(mu_);
  handed_back_ += static_cast<int64_t>(leased_.size());
  leased_.clear();
  leased_images_.clear();
  done_cv_.notify_all();
  return Ok();
}

void KafkaJobQueue::Wake() { ready_cv_.notify_all(); }

Result<int64_t> KafkaJobQueue::Depth() { return lag_.load(); }

Status KafkaJobQueue::Ping() {
  if (failed_) {
    return MakeError(ErrorKind::kUnavailable, "the Kafka job consumer failed (see the log); restart the worker");
  }
  // A worker cut off from its brokers (down, a refused login, an untrusted certificate) says so, and why.
  if (consumer_) return consumer_->Reachable(std::chrono::seconds(2));
  return Ok();
}

}  // namespace imgpipe
