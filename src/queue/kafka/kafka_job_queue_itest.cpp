// KafkaJobQueue against the real broker (scripts/services/kafka; IMGPIPE_TEST_KAFKA_BROKERS). The JobQueue contract
// suite does not fit this backend (its jobs come from the warehouse's table, its leases expire by time), so this
// suite checks the same promises in Kafka's terms: offsets move only past finished jobs, in order; a retry comes back
// with its attempt counted; given-up jobs and records that are not jobs land in the dead-letter topic; one image's
// jobs never run at once.
#include "queue/kafka/kafka_job_queue.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <map>

#include "core/ids.hpp"
#include "queue/kafka/job_record.hpp"
#include "queue/kafka/kafka_image_events.hpp"

namespace imgpipe {
namespace {

using namespace std::chrono_literals;

class KafkaJobQueueTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* brokers = std::getenv("IMGPIPE_TEST_KAFKA_BROKERS");
    if (brokers == nullptr || *brokers == '\0') {
      const char* required = std::getenv("IMGPIPE_REQUIRE_KAFKA");
      if (required && std::string(required) == "1") FAIL() << "IMGPIPE_REQUIRE_KAFKA=1 but no broker is set";
      GTEST_SKIP() << "no broker: set IMGPIPE_TEST_KAFKA_BROKERS (scripts/services/kafka start)";
    }
    brokers_ = brokers;
    options_.client = {{"bootstrap.servers", brokers_}};
    options_.topic = "jobq-test-" + HexEncode(RandomBytes(6));
    options_.group_id = "g-" + options_.topic;
    options_.send_timeout = 30s;
    auto producer = KafkaProducer::Create(options_.client);
    ASSERT_TRUE(producer.ok());
    producer_ = std::move(producer).value();
  }

  Job NewJob() {
    Job job;
    job.image_id = NewImageId(clock_.Now());
    job.pipeline = "default";
    job.enqueued_at = clock_.Now();
    return job;
  }

  // One key for every record sent here: one partition, so offsets follow the order of sending.
  void Send(const std::string& value) {
    Status s = producer_->Send(options_.topic, "one-key", value, {{std::string(kJobAttemptsHeader), "0"}}, 30s);
    ASSERT_TRUE(s.ok()) << s.error().message;
  }

  std::unique_ptr<KafkaJobQueue> StartQueue() {
    auto q = std::make_unique<KafkaJobQueue>(options_, clock_, nullptr);
    Status s = q->Start();
    EXPECT_TRUE(s.ok()) << s.error().message;
    return q;
  }

  // Leases until `n` jobs came (or a generous deadline).
  static std::vector<Job> LeaseN(KafkaJobQueue& q, size_t n) {
    std::vector<Job> out;
    auto deadline = std::chrono::steady_clock::now() + 60s;
    while (out.size() < n && std::chrono::steady_clock::now() < deadline) {
      auto got = q.Lease("test", n - out.size(), 1s, 500ms);
      EXPECT_TRUE(got.ok());
      if (got.ok()) out.insert(out.end(), got->begin(), got->end());
    }
    return out;
  }

  // A record copied out of librdkafka (a consumer cannot be destroyed while its messages live).
  struct Record {
    std::string value;
    std::optional<std::string> key;
    std::vector<KafkaHeader> headers;
    int32_t partition = 0;
    int64_t offset = 0;
  };

  // The records of `topic` from the start, read by a fresh group (or `group`), until `n` came.
  std::vector<Record> Read(const std::string& topic, size_t n, const std::string& group = "") {
    auto c = KafkaConsumer::Create({{"bootstrap.servers", brokers_},
                                    {"group.id", group.empty() ? "reader-" + HexEncode(RandomBytes(4)) : group}},
                                   nullptr);
    EXPECT_TRUE(c.ok());
    EXPECT_TRUE((*c)->Subscribe({topic}).ok());
    std::vector<Record> out;
    auto deadline = std::chrono::steady_clock::now() + 60s;
    while (out.size() < n && std::chrono::steady_clock::now() < deadline) {
      auto m = (*c)->Poll(200ms);
      if (!m.ok() || !*m) continue;
      const KafkaMessage& msg = **m;
      Record r{std::string(msg.value()), std::nullopt, msg.headers(), msg.partition(), msg.offset()};
      if (auto key = msg.key()) r.key = std::string(*key);
      out.push_back(std::move(r));
    }
    return out;
  }

  static std::string Header(const Record& m, std::string_view name) {
    for (const auto& h : m.headers) {
      if (h.name == name && h.value) return *h.value;
    }
    return "(none)";
  }

  SystemClock clock_;
  std::string brokers_;
  KafkaJobQueueOptions options_;
  std::unique_ptr<KafkaProducer> producer_;
};

TEST_F(KafkaJobQueueTest, OffsetsMoveOnlyPastFinishedJobsInOrder) {
  std::vector<Job> sent;
  for (int i = 0; i < 4; ++i) {
    sent.push_back(NewJob());
    Send(EncodeJobValue(sent.back()));
  }
  {
    auto q = StartQueue();
    auto jobs = LeaseN(*q, 4);
    ASSERT_EQ(jobs.size(), 4u);
    for (size_t i = 0; i < 4; ++i) EXPECT_EQ(jobs[i].image_id, sent[i].image_id);
    // The third is handed back unfinished (a drain past its grace): the group must start again there, even though
    // the fourth finished.
    ASSERT_TRUE(q->Ack(jobs[0]).ok());
    ASSERT_TRUE(q->Ack(jobs[1]).ok());
    ASSERT_TRUE(q->Ack(jobs[3]).ok());
    ASSERT_TRUE(q->ReleaseLeases("test").ok());
    q->Close();
  }
  auto again = Read(options_.topic, 2, options_.group_id);
  ASSERT_EQ(again.size(), 2u);
  auto first = ParseJobRecord(again[0].value, std::nullopt, std::nullopt);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->job.image_id, sent[2].image_id);
  EXPECT_EQ(again[0].offset, 2);
}

TEST_F(KafkaJobQueueTest, ARetryComesBackWithItsAttemptCounted) {
  Job sent = NewJob();
  Send(EncodeJobValue(sent));
  auto q = StartQueue();
  auto first = LeaseN(*q, 1);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].attempts, 0);
  ASSERT_TRUE(q->Retry(first[0], clock_.Now() + 300ms, "storage was away").ok());
  auto second = LeaseN(*q, 1);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].image_id, sent.image_id);
  EXPECT_EQ(second[0].attempts, 1);
  ASSERT_TRUE(q->Ack(second[0]).ok());
  auto retries = Read(options_.topic + ".retry", 1);
  ASSERT_EQ(retries.size(), 1u);
  EXPECT_EQ(Header(retries[0], kJobErrorHeader), "storage was away");
  EXPECT_EQ(retries[0].key, sent.image_id.value()) << "keyed by image id, as on the jobs topic";
  q->Close();
}

TEST_F(KafkaJobQueueTest, GivenUpJobsAndRecordsThatAreNotJobsGoToTheDeadLetterTopic) {
  Send("this is not a job");
  Job sent = NewJob();
  Send(EncodeJobValue(sent));
  auto q = StartQueue();
  auto jobs = LeaseN(*q, 1);
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].image_id, sent.image_id) << "the bad record is never leased";
  ASSERT_TRUE(q->DeadLetter(jobs[0], "gave up after 5 attempts").ok());
  auto dead = Read(options_.topic + ".dlq", 2);
  ASSERT_EQ(dead.size(), 2u);
  std::map<std::string, const Record*> by_reason;
  for (const auto& m : dead) by_reason[Header(m, "imgpipe-dlq-reason")] = &m;
  ASSERT_TRUE(by_reason.count("bad_job_record"));
  ASSERT_TRUE(by_reason.count("processing_failed"));
  EXPECT_EQ(by_reason["bad_job_record"]->value, "this is not a job");
  EXPECT_EQ(Header(*by_reason["bad_job_record"], "imgpipe-dlq-offset"), "0");
  EXPECT_EQ(Header(*by_reason["processing_failed"], "imgpipe-dlq-error"), "gave up after 5 attempts");
  EXPECT_EQ(Header(*by_reason["processing_failed"], std::string(kJobAttemptsHeader)), "1");
  EXPECT_EQ(by_reason["processing_failed"]->key, sent.image_id.value());
  const int32_t partition = std::stoi(Header(*by_reason["bad_job_record"], "imgpipe-dlq-partition"));
  q->Close();
  // Both are done and committed: the group starts after them.
  auto c = KafkaConsumer::Create({{"bootstrap.servers", brokers_}, {"group.id", options_.group_id}}, nullptr);
  ASSERT_TRUE(c.ok());
  auto start = (*c)->StartOffset({options_.topic, partition}, 30s);
  ASSERT_TRUE(start.ok()) << start.error().message;
  EXPECT_EQ(*start, 2);
}

TEST_F(KafkaJobQueueTest, OneImagesJobsNeverRunAtOnce) {
  Job sent = NewJob();
  Send(EncodeJobValue(sent));
  Send(EncodeJobValue(sent));  // a duplicate, as a relay that crashed after the broker's ack produces
  auto q = StartQueue();
  auto first = LeaseN(*q, 1);
  ASSERT_EQ(first.size(), 1u);
  // The duplicate is fetched (both records are on one partition) but held while the first runs.
  auto none = q->Lease("test", 10, 1s, 1s);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  ASSERT_TRUE(q->Ack(first[0]).ok());
  auto second = LeaseN(*q, 1);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].image_id, sent.image_id);
  EXPECT_NE(second[0].id, first[0].id);
  q->Close();
}

// What a worker relies on before it acknowledges a job: once Flush returns true, every event published before the
// call is on the topic; while the broker cannot be reached, Flush says so instead.
TEST_F(KafkaJobQueueTest, EventsFlushReturnsOnceTheBrokerHasEveryEventPublishedBefore) {
  const std::string topic = options_.topic + ".events";
  auto events_producer = KafkaProducer::Create(options_.client);
  ASSERT_TRUE(events_producer.ok());
  KafkaImageEvents events(topic, std::move(events_producer).value(), nullptr);
  std::vector<std::string> ids;
  for (int i = 0; i < 20; ++i) {
    ImageEvent e{"image.processed", NewImageId(clock_.Now()), clock_.Now(), {}};
    ids.push_back(e.image_id.value());
    events.Publish(std::move(e));
  }
  ASSERT_TRUE(events.Flush(60s));
  auto records = Read(topic, ids.size());
  std::vector<std::string> keys;
  for (const auto& r : records) keys.push_back(r.key.value_or(""));
  std::sort(keys.begin(), keys.end());
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(keys, ids);
  EXPECT_TRUE(events.Flush(0ms)) << "nothing published since";

  // No broker answers on this port: the event stays buffered and Flush reports it.
  auto nowhere = KafkaProducer::Create({{"bootstrap.servers", "127.0.0.1:1"}});
  ASSERT_TRUE(nowhere.ok());
  KafkaImageEvents cut_off(topic, std::move(nowhere).value(), nullptr);
  cut_off.Publish({"image.processed", NewImageId(clock_.Now()), clock_.Now(), {}});
  EXPECT_FALSE(cut_off.Flush(500ms));
  cut_off.Stop(0ms);
}

}  // namespace
}  // namespace imgpipe
