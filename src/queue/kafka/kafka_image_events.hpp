#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "core/image_events.hpp"
#include "kafka/kafka_client.hpp"

namespace imgpipe {

class Metrics;

//! ImageEvents on a Kafka topic (kafka.events_topic), keyed by image id so one image's events stay in order. A
//! background thread sends batches and waits for the broker's acknowledgements; while the broker is away events wait
//! in memory (at most kMaxBuffered; beyond, the oldest are dropped and counted), and Stop() gives them until the
//! grace runs out.
class KafkaImageEvents : public ImageEvents {
 public:
  static constexpr size_t kMaxBuffered = 100000;

  KafkaImageEvents(std::string topic, std::unique_ptr<KafkaProducer> producer, Metrics* metrics);
  ~KafkaImageEvents() override;
  //! Declares imgpipe_events_*; once per registry.
  static void DeclareMetrics(Metrics& metrics);

  void Publish(ImageEvent event) override;
  bool Flush(std::chrono::milliseconds timeout) override;
  //! Sends what is buffered for at most `grace`, then stops.
  void Stop(std::chrono::milliseconds grace);

 private:
  void Loop();

  std::string topic_;
  std::unique_ptr<KafkaProducer> producer_;
  Metrics* metrics_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable left_cv_;  // events left pending_ (sent or dropped)
  std::deque<KafkaProducer::Record> pending_;
  uint64_t published_ = 0;  // events ever published; published_ - pending_.size() have left pending_, in order
  uint64_t dropped_ = 0;  // events dropped from the front of pending_ so far
  std::atomic<bool> stopping_{false};
  std::chrono::steady_clock::time_point give_up_;
  std::thread thread_;
};

}  // namespace imgpipe
