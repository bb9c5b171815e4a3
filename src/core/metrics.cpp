#include "core/metrics.hpp"

#include <cassert>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace imgpipe {
namespace {

std::string FormatNumber(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.0f", v);
    return buf;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

std::string EscapeLabel(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') {
      out.push_back('\\');
      out.push_back(c);
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string LabelText(const MetricLabels& labels, const std::string& extra_key = {}, const std::string& extra = {}) {
  if (labels.empty() && extra_key.empty()) return {};
  std::string out = "{";
  bool first = true;
  for (const auto& [k, v] : labels) {
    if (!first) out += ",";
    first = false;
    out += k + "=\"" + EscapeLabel(v) + "\"";
  }
  if (!extra_key.empty()) {
    if (!first) out += ",";
    out += extra_key + "=\"" + extra + "\"";
  }
  return out + "}";
}

}  // namespace

void Metrics::DeclareCounter(const std::string& name, const std::string& help) {
  std::lock_guard lock(mu_);
  families_[name] = Family{Type::kCounter, help, {}, {}};
}

void Metrics::DeclareGauge(const std::string& name, const std::string& help) {
  std::lock_guard lock(mu_);
  families_[name] = Family{Type::kGauge, help, {}, {}};
}

void Metrics::DeclareHistogram(const std::string& name, const std::string& help, std::vector<double> buckets) {
  std::lock_guard lock(mu_);
  families_[name] = Family{Type::kHistogram, help, std::move(buckets), {}};
}

Metrics::Family* Metrics::Find(const std::string& name, Type type) {
  auto it = families_.find(name);
  assert(it != families_.end() && it->second.type == type && "metric not declared with this type");
  if (it == families_.end() || it->second.type != type) return nullptr;
  return &it->second;
}

void Metrics::Add(const std::string& name, const MetricLabels& labels, double value) {
  std::lock_guard lock(mu_);
  if (Family* f = Find(name, Type::kCounter)) f->series[labels].value += value;
}

void Metrics::Set(const std::string& name, const MetricLabels& labels, double value) {
  std::lock_guard lock(mu_);
  if (Family* f = Find(name, Type::kGauge)) f->series[labels].value = value;
}

void Metrics::Observe(const std::string& name, const MetricLabels& labels, double value) {
  std::lock_guard lock(mu_);
  Family* f = Find(name, Type::kHistogram);
  if (!f) return;
  Series& s = f->series[labels];
  if (s.counts.empty()) s.counts.assign(f->buckets.size() + 1, 0);
  size_t i = 0;
  while (i < f->buckets.size() && value > f->buckets[i]) ++i;
  ++s.counts[i];
  s.sum += value;
  ++s.count;
}

std::string Metrics::Render() const {
  std::lock_guard lock(mu_);
  std::ostringstream out;
  for (const auto& [name, f] : families_) {
    const char* type = f.type == Type::kCounter ? "counter" : f.type == Type::kGauge ? "gauge" : "histogram";
    out << "# HELP " << name << " " << f.help << "\n# TYPE " << name << " " << type << "\n";
    for (const auto& [labels, s] : f.series) {
      if (f.type != Type::kHistogram) {
        out << name << LabelText(labels) << " " << FormatNumber(s.value) << "\n";
        continue;
      }
      uint64_t cumulative = 0;
      for (size_t i = 0; i <= f.buckets.size(); ++i) {
        cumulative += s.counts[i];
        std::string le = i < f.buckets.size() ? FormatNumber(f.buckets[i]) : "+Inf";
        out << name << "_bucket" << LabelText(labels, "le", le) << " " << cumulative << "\n";
      }
      out << name << "_sum" << LabelText(labels) << " " << FormatNumber(s.sum) << "\n";
      out << name << "_count" << LabelText(labels) << " " << s.count << "\n";
    }
  }
  return out.str();
}

std::vector<double> Metrics::LatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

void DeclareImgpipeMetrics(Metrics& m) {
  m.DeclareCounter("imgpipe_http_requests_total", "HTTP requests answered, by method, route and status.");
  m.DeclareHistogram("imgpipe_http_request_duration_seconds", "Time from request header to response sent, by route.",
                     Metrics::LatencyBuckets());
  m.DeclareHistogram("imgpipe_stage_duration_seconds",
                     "Time spent per pipeline stage: receive, validate, store, process, encode.",
                     Metrics::LatencyBuckets());
  m.DeclareCounter("imgpipe_uploads_total", "Uploads by outcome (accepted, refused) and error code.");
  m.DeclareCounter("imgpipe_upload_bytes_total", "Bytes of accepted originals.");
  m.DeclareCounter("imgpipe_jobs_total", "Processing attempts by outcome: processed, retried, failed.");
  m.DeclareGauge("imgpipe_queue_depth", "Jobs waiting or leased in the queue.");
  m.DeclareCounter("imgpipe_retention_expired_total", "Images whose blobs retention removed.");
  m.DeclareCounter("imgpipe_retention_sweeps_total", "Retention sweeps this process ran.");
  m.DeclareCounter("imgpipe_rollup_compactions_total",
                   "Warehouse rollup compactions this process ran (one server at a time holds the compaction lease).");
  m.DeclareGauge("imgpipe_retention_sweeper_active",
                 "1 while this process holds the retention sweeper lease (sweeps), 0 while another does.");
  m.DeclareGauge("imgpipe_build_info", "Always 1; the labels carry the version.");
  m.DeclareGauge("imgpipe_inflight_requests", "Requests being handled now.");
  m.DeclareCounter("imgpipe_rate_limited_total",
                   "Requests refused with 429, by limit: key and address (rate), uploads_per_key (concurrency).");
  m.DeclareCounter("imgpipe_http_timeouts_total",
                   "Requests cut off with 408 because their header or body did not arrive in time, by phase (header, "
                   "body): server.header_timeout, server.body_timeout, server.request_timeout.");
}

}  // namespace imgpipe
