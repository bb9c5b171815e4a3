#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace imgpipe {

using MetricLabels = std::vector<std::pair<std::string, std::string>>;

//! A process-wide registry of Prometheus metrics, rendered in text format 0.0.4. Names must carry the imgpipe_ prefix
//! and base units (seconds, bytes). Thread-safe; recording is a map lookup under a mutex, cheap next to image work.
class Metrics {
 public:
  //! Declares a metric with its help text; recording an undeclared name is a programmer error (asserted).
  void DeclareCounter(const std::string& name, const std::string& help);
  void DeclareGauge(const std::string& name, const std::string& help);
  //! `buckets` are upper bounds in increasing order; +Inf is implicit.
  void DeclareHistogram(const std::string& name, const std::string& help, std::vector<double> buckets);

  void Add(const std::string& name, const MetricLabels& labels, double value = 1);
  void Set(const std::string& name, const MetricLabels& labels, double value);
  void Observe(const std::string& name, const MetricLabels& labels, double value);

  std::string Render() const;

  //! Buckets from 1 ms to ~60 s, for request and stage latencies.
  static std::vector<double> LatencyBuckets();

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Series {
    double value = 0;                // counter or gauge
    std::vector<uint64_t> counts;    // histogram: one per bucket, plus +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  struct Family {
    Type type;
    std::string help;
    std::vector<double> buckets;
    std::map<MetricLabels, Series> series;
  };
  Family* Find(const std::string& name, Type type);

  mutable std::mutex mu_;
  std::map<std::string, Family> families_;
};

//! The metric names imgpipe records, declared once in DeclareImgpipeMetrics().
void DeclareImgpipeMetrics(Metrics& m);

}  // namespace imgpipe
