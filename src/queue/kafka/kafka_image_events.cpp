#include "queue/kafka/kafka_image_events.hpp"

#include "core/log.hpp"
#include "core/metrics.hpp"

namespace imgpipe {

namespace {
constexpr size_t kBatch = 256;
constexpr auto kSendTimeout = std::chrono::seconds(10);
constexpr auto kBackoff = std::chrono::seconds(1);
}  // namespace

void KafkaImageEvents::DeclareMetrics(Metrics& m) {
  m.DeclareCounter("imgpipe_events_published_total", "Image events acknowledged by the events topic");
  m.DeclareCounter("imgpipe_events_dropped_total",
                   "Image events dropped: the broker was away too long and the buffer was full, or at shutdown");
  m.DeclareGauge("imgpipe_events_buffered", "Image events waiting for the broker");
}

KafkaImageEvents::KafkaImageEvents(std::string topic, std::unique_ptr<KafkaProducer> producer, Metrics* metrics)
    : topic_(std::move(topic)), producer_(std::move(producer)), metrics_(metrics) {
  thread_ = std::thread([this] { Loop(); });
}

KafkaImageEvents::~KafkaImageEvents() { Stop(std::chrono::milliseconds(0)); }

void KafkaImageEvents::Publish(ImageEvent event) {
  KafkaProducer::Record r{topic_, event.image_id.value(), EncodeImageEvent(event), {{"imgpipe-event", event.type}}};
  std::lock_guard lock(mu_);
  if (pending_.size() >= kMaxBuffered) {
    pending_.pop_front();
    ++dropped_;
    if (metrics_) metrics_->Add("imgpipe_events_dropped_total", {});
    left_cv_.notify_all();
  }
  pending_.push_back(std::move(r));
  ++published_;
  cv_.notify_one();
}

bool KafkaImageEvents::Flush(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  // Events leave pending_ from the front only, so those published before now have all left once this many have.
  const uint64_t target = published_;
  return left_cv_.wait_for(lock, timeout, [&] { return published_ - pending_.size() >= target; });
}

void KafkaImageEvents::Stop(std::chrono::milliseconds grace) {
  if (!thread_.joinable()) return;
  {
    std::lock_guard lock(mu_);
    give_up_ = std::chrono::steady_clock::now() + grace;
    stopping_ = true;
  }
  cv_.notify_one();
  thread_.join();
}

void KafkaImageEvents::Loop() {
  while (true) {
    std::vector<KafkaProducer::Record> batch;
    uint64_t dropped_before = 0;
    {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, kBackoff, [&] { return stopping_ || !pending_.empty(); });
      if (stopping_ && (pending_.empty() || std::chrono::steady_clock::now() >= give_up_)) {
        if (!pending_.empty()) {
          LogWarn("events not published at shutdown", {{"events", static_cast<int64_t>(pending_.size())}});
          if (metrics_) metrics_->Add("imgpipe_events_dropped_total", {}, static_cast<double>(pending_.size()));
        }
        return;
      }
      for (size_t i = 0; i < pending_.size() && i < kBatch; ++i) batch.push_back(pending_[i]);
      dropped_before = dropped_;
      if (metrics_) metrics_->Set("imgpipe_events_buffered", {}, static_cast<double>(pending_.size()));
    }
    if (batch.empty()) continue;
    auto results = producer_->SendMany(batch, kSendTimeout);
    // Sent in order; the first failure keeps it and everything after it (one image's events stay in order).
    size_t sent = 0;
    while (sent < results.size() && results[sent].ok()) ++sent;
    {
      std::lock_guard lock(mu_);
      // Events dropped while we sent were from the front of this batch: they are gone already.
      const uint64_t gone = dropped_ - dropped_before;
      for (uint64_t i = gone; i < sent && !pending_.empty(); ++i) pending_.pop_front();
    }
    left_cv_.notify_all();
    if (metrics_ && sent > 0) metrics_->Add("imgpipe_events_published_total", {}, static_cast<double>(sent));
    if (sent < results.size()) {
      LogWarn("cannot publish events yet; they wait", {{"error", results[sent].error().message}});
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, kBackoff, [&] { return stopping_.load(); });
    }
  }
}

}  // namespace imgpipe
