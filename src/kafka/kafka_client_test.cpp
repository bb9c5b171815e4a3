// The librdkafka layer. Error mapping and configuration run everywhere; the round trips need the broker that
// scripts/services/kafka starts (IMGPIPE_TEST_KAFKA_BROKERS): skipped without it, failed without it when
// IMGPIPE_REQUIRE_KAFKA=1 (as under scripts/test).
#include "kafka/kafka_client.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>

#include "core/ids.hpp"

namespace imgpipe {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

TEST(KafkaClientTest, ErrorKinds) {
  EXPECT_EQ(KafkaErrorKind(RD_KAFKA_RESP_ERR__TRANSPORT), ErrorKind::kUnavailable);
  EXPECT_EQ(KafkaErrorKind(RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN), ErrorKind::kUnavailable);
  EXPECT_EQ(KafkaErrorKind(RD_KAFKA_RESP_ERR__MSG_TIMED_OUT), ErrorKind::kUnavailable);
  EXPECT_EQ(KafkaErrorKind(RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION), ErrorKind::kUnavailable);
  EXPECT_EQ(KafkaErrorKind(RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE), ErrorKind::kTooLarge);
  EXPECT_EQ(KafkaErrorKind(RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED), ErrorKind::kPermissionDenied);
  EXPECT_EQ(KafkaErrorKind(RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED), ErrorKind::kPermissionDenied);
  EXPECT_EQ(KafkaErrorKind(RD_KAFKA_RESP_ERR__INVALID_ARG), ErrorKind::kInvalidArgument);
  Error e = KafkaError(RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE, "cannot write to topic t");
  EXPECT_THAT(e.message, HasSubstr("cannot write to topic t: "));
  EXPECT_THAT(e.message, HasSubstr("message.max.bytes"));
}

TEST(KafkaClientErrorsTest, ACredentialsFailureOutlivesTheErrorsItCauses) {
  // A failed TLS handshake or login is followed by the connection dropping; the cause must stay what is reported.
  for (rd_kafka_resp_err_t cause : {RD_KAFKA_RESP_ERR__SSL, RD_KAFKA_RESP_ERR__AUTHENTICATION,
                                    RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED}) {
    KafkaClientErrors errors;
    errors.Record(RD_KAFKA_RESP_ERR__TRANSPORT, "connection refused");
    errors.Record(cause, "certificate verify failed");
    errors.Record(RD_KAFKA_RESP_ERR__TRANSPORT, "Broker transport failure");
    errors.Record(RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN, "1/1 brokers are down");
    EXPECT_EQ(errors.Get().code, cause);
    EXPECT_EQ(errors.Get().reason, "certificate verify failed");
    EXPECT_TRUE(KafkaClientErrors::IsCredentials(errors.Get().code));
    errors.Clear();
    errors.Record(RD_KAFKA_RESP_ERR__TRANSPORT, "Broker transport failure");
    EXPECT_EQ(errors.Get().code, RD_KAFKA_RESP_ERR__TRANSPORT);
  }
}

TEST(KafkaClientTest, SecuritySettingsPassThrough) {
  Config c;
  c.kafka_brokers = "k1:9093,k2:9093";
  c.kafka_security_protocol = "sasl_ssl";
  c.kafka_sasl_mechanism = "SCRAM-SHA-512";
  c.kafka_sasl_username = "imgpipe";
  c.kafka_sasl_password = "s3cret";
  c.kafka_ssl_ca_location = "/etc/imgpipe/kafka-ca.pem";
  KafkaProperties p = KafkaClientProperties(c);
  EXPECT_EQ(p["bootstrap.servers"], "k1:9093,k2:9093");
  EXPECT_EQ(p["security.protocol"], "sasl_ssl");
  EXPECT_EQ(p["sasl.mechanisms"], "SCRAM-SHA-512");
  EXPECT_EQ(p["sasl.username"], "imgpipe");
  EXPECT_EQ(p["sasl.password"], "s3cret");
  EXPECT_EQ(p["ssl.ca.location"], "/etc/imgpipe/kafka-ca.pem");
  EXPECT_EQ(p.count("ssl.key.location"), 0u);
  // librdkafka accepts the names and values (it checks them when the client is created; the CA file itself is read
  // then too, so it is left out here).
  p.erase("ssl.ca.location");
  auto producer = KafkaProducer::Create(p);
  EXPECT_TRUE(producer.ok()) << producer.error().message;
}

TEST(KafkaClientTest, GroupConsumerPropertiesAddTheGroupToTheClientSettings) {
  KafkaProperties client = {{"bootstrap.servers", "127.0.0.1:9092"}};
  KafkaProperties dynamic = GroupConsumerProperties(client, "workers", "", std::chrono::seconds(300),
                                                    std::chrono::seconds(6));
  EXPECT_EQ(dynamic.at("bootstrap.servers"), "127.0.0.1:9092");
  EXPECT_EQ(dynamic.at("group.id"), "workers");
  EXPECT_EQ(dynamic.at("max.poll.interval.ms"), "300000");
  EXPECT_EQ(dynamic.at("session.timeout.ms"), "6000");
  EXPECT_EQ(dynamic.count("group.instance.id"), 0u);
  KafkaProperties fixed = GroupConsumerProperties(client, "workers", "worker-0", std::chrono::seconds(300),
                                                  std::chrono::seconds(6));
  EXPECT_EQ(fixed.at("group.instance.id"), "worker-0");
}

TEST(KafkaClientTest, BadPropertyIsRefusedWithoutShowingSecrets) {
  auto bad = KafkaProducer::Create({{"bootstrap.servers", "127.0.0.1:1"}, {"no.such.property", "1"}});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_THAT(bad.error().message, HasSubstr("no.such.property"));
  auto secret = KafkaConsumer::Create({{"group.id", "g"}, {"sasl.password", std::string("s3cret\0x", 8)}}, nullptr);
  if (!secret.ok()) {
    EXPECT_EQ(secret.error().message.find("s3cret"), std::string::npos);
  }
  auto bad_value = KafkaConsumer::Create({{"group.id", "g"}, {"session.timeout.ms", "zero"}}, nullptr);
  ASSERT_FALSE(bad_value.ok());
  EXPECT_THAT(bad_value.error().message, HasSubstr("session.timeout.ms"));
}

TEST(KafkaClientTest, SendToAnUnreachableBrokerTimesOutAsUnavailable) {
  auto producer = KafkaProducer::Create({{"bootstrap.servers", "127.0.0.1:1"}, {"message.timeout.ms", "300"}});
  ASSERT_TRUE(producer.ok()) << producer.error().message;
  Status s = (*producer)->Send("t", std::nullopt, "v", {}, 5s);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().kind, ErrorKind::kUnavailable) << s.error().message;
}

TEST(KafkaClientTest, DescribingAClusterWhereNoneListensIsUnavailable) {
  auto info = DescribeKafkaCluster({{"bootstrap.servers", "127.0.0.1:1"}}, 500ms);
  ASSERT_FALSE(info.ok());
  EXPECT_EQ(info.error().kind, ErrorKind::kUnavailable) << info.error().message;
  EXPECT_THAT(info.error().message, HasSubstr("127.0.0.1:1"));
}

class KafkaBrokerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* brokers = std::getenv("IMGPIPE_TEST_KAFKA_BROKERS");
    const char* required = std::getenv("IMGPIPE_REQUIRE_KAFKA");
    if (brokers == nullptr || *brokers == '\0') {
      if (required && std::string(required) == "1") {
        FAIL() << "IMGPIPE_REQUIRE_KAFKA=1 but IMGPIPE_TEST_KAFKA_BROKERS is not set (scripts/services/kafka start)";
      }
      GTEST_SKIP() << "no broker: set IMGPIPE_TEST_KAFKA_BROKERS (scripts/services/kafka start)";
    }
    brokers_ = brokers;
    topic_ = "kafka-client-test-" + HexEncode(RandomBytes(6));
  }

  struct Recorder : KafkaConsumer::RebalanceListener {
    std::vector<TopicPartition> assigned;
    int revoked = 0;
    void OnAssigned(const std::vector<TopicPartition>& p) override {
      assigned.insert(assigned.end(), p.begin(), p.end());
    }
    void OnRevoked(const std::vector<TopicPartition>& p) override { revoked += static_cast<int>(p.size()); }
  };

  std::unique_ptr<KafkaConsumer> NewConsumer(const std::string& group, Recorder* recorder) {
    auto c = KafkaConsumer::Create({{"bootstrap.servers", brokers_}, {"group.id", group}}, recorder);
    EXPECT_TRUE(c.ok()) << c.error().message;
    Status s = (*c)->Subscribe({topic_});
    EXPECT_TRUE(s.ok()) << s.error().message;
    return std::move(c).value();
  }

  // Polls until `n` records arrived (or a generous deadline).
  std::vector<KafkaMessage> Take(KafkaConsumer& c, size_t n) {
    std::vector<KafkaMessage> out;
    auto deadline = std::chrono::steady_clock::now() + 60s;
    while (out.size() < n && std::chrono::steady_clock::now() < deadline) {
      auto m = c.Poll(200ms);
      EXPECT_TRUE(m.ok());
      if (m.ok() && *m) out.push_back(std::move(**m));
    }
    return out;
  }

  std::string brokers_;
  std::string topic_;
};

TEST_F(KafkaBrokerTest, DescribesTheClusterItIsConnectedTo) {
  auto producer = KafkaProducer::Create({{"bootstrap.servers", brokers_}});
  ASSERT_TRUE(producer.ok()) << producer.error().message;
  ASSERT_TRUE((*producer)->Send(topic_, std::nullopt, "v", {}, 30s).ok());  // the topic exists from here on
  auto info = DescribeKafkaCluster({{"bootstrap.servers", brokers_}}, 30s);
  ASSERT_TRUE(info.ok()) << info.error().message;
  ASSERT_EQ(info->brokers.size(), 1u);  // the single-node broker of scripts/services/kafka
  EXPECT_EQ(info->brokers[0], brokers_);
  EXPECT_GE(info->topics, 1);
}

TEST_F(KafkaBrokerTest, RoundTripWithHeadersAndStoredOffsets) {
  auto producer = KafkaProducer::Create({{"bootstrap.servers", brokers_}});
  ASSERT_TRUE(producer.ok()) << producer.error().message;
  for (int i = 0; i < 6; ++i) {
    std::vector<KafkaHeader> headers = {{"imgpipe-source-id", "s" + std::to_string(i)}, {"nothing", std::nullopt}};
    // One key: one partition, so offsets follow the send order.
    Status s = (*producer)->Send(topic_, "same-key", "value-" + std::to_string(i), headers, 30s);
    ASSERT_TRUE(s.ok()) << s.error().message;
  }

  const std::string group = "g-" + topic_;
  Recorder first_recorder;
  {
    auto first = NewConsumer(group, &first_recorder);
    auto got = Take(*first, 6);
    ASSERT_EQ(got.size(), 6u);
    EXPECT_EQ(got[0].value(), "value-0");
    EXPECT_EQ(got[0].key(), "same-key");
    EXPECT_GT(got[0].timestamp_ms(), 0);
    auto headers = got[0].headers();
    ASSERT_EQ(headers.size(), 2u);
    EXPECT_EQ(headers[0].name, "imgpipe-source-id");
    EXPECT_EQ(headers[0].value, "s0");
    EXPECT_FALSE(headers[1].value) << "a null header stays null";
    EXPECT_FALSE(first_recorder.assigned.empty());
    // Only the first four are done: the next member of the group starts at the fifth.
    TopicPartition tp{topic_, got[3].partition()};
    ASSERT_TRUE(first->StoreOffset(tp, got[3].offset() + 1).ok());
    ASSERT_TRUE(first->CommitStored().ok());
    auto high = first->HighWatermark(tp);
    ASSERT_TRUE(high);
    EXPECT_EQ(*high, got[5].offset() + 1);
    first->Close();
  }
  EXPECT_GT(first_recorder.revoked, 0) << "closing revokes through the listener";

  Recorder second_recorder;
  auto second = NewConsumer(group, &second_recorder);
  auto rest = Take(*second, 2);
  ASSERT_EQ(rest.size(), 2u);
  EXPECT_EQ(rest[0].value(), "value-4");
  EXPECT_EQ(rest[1].value(), "value-5");
}

TEST_F(KafkaBrokerTest, SendManyAcknowledgesEachRecordInOrder) {
  auto producer = KafkaProducer::Create({{"bootstrap.servers", brokers_}});
  ASSERT_TRUE(producer.ok());
  std::vector<KafkaProducer::Record> batch;
  for (int i = 0; i < 5; ++i) batch.push_back({topic_, "one-key", "v" + std::to_string(i), {{"n", std::to_string(i)}}});
  batch.push_back({std::string(300, 'x'), std::nullopt, "bad topic name", {}});
  auto results = (*producer)->SendMany(batch, 30s);
  ASSERT_EQ(results.size(), batch.size());
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(results[i].ok()) << results[i].error().message;
  EXPECT_FALSE(results[5].ok()) << "a refused record fails alone";
  Recorder recorder;
  auto consumer = NewConsumer("g-" + topic_, &recorder);
  auto got = Take(*consumer, 5);
  ASSERT_EQ(got.size(), 5u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(got[i].value(), "v" + std::to_string(i));
    ASSERT_EQ(got[i].headers().size(), 1u);
    EXPECT_EQ(got[i].headers()[0].value, std::to_string(i));
  }
}

TEST_F(KafkaBrokerTest, PausedPartitionsDeliverNothingUntilResumed) {
  auto producer = KafkaProducer::Create({{"bootstrap.servers", brokers_}});
  ASSERT_TRUE(producer.ok());
  ASSERT_TRUE((*producer)->Send(topic_, "k", "one", {}, 30s).ok());
  Recorder recorder;
  auto consumer = NewConsumer("g-" + topic_, &recorder);
  ASSERT_EQ(Take(*consumer, 1).size(), 1u);
  ASSERT_TRUE(consumer->Pause(recorder.assigned).ok());
  ASSERT_TRUE((*producer)->Send(topic_, "k", "two", {}, 30s).ok());
  for (int i = 0; i < 10; ++i) {
    auto m = consumer->Poll(100ms);
    ASSERT_TRUE(m.ok());
    EXPECT_FALSE(*m) << "a paused partition delivered a record";
  }
  ASSERT_TRUE(consumer->Resume(recorder.assigned).ok());
  auto after = Take(*consumer, 1);
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0].value(), "two");
}

TEST_F(KafkaBrokerTest, StartOffsetIsTheCommittedOneAndSeekRereads) {
  auto producer = KafkaProducer::Create({{"bootstrap.servers", brokers_}});
  ASSERT_TRUE(producer.ok());
  for (int i = 0; i < 4; ++i) ASSERT_TRUE((*producer)->Send(topic_, "k", "r" + std::to_string(i), {}, 30s).ok());
  Recorder recorder;
  auto consumer = NewConsumer("g-" + topic_, &recorder);
  auto got = Take(*consumer, 4);
  ASSERT_EQ(got.size(), 4u);
  TopicPartition tp{topic_, got[0].partition()};
  // Nothing committed yet: the log's first offset.
  auto start = consumer->StartOffset(tp, 10s);
  ASSERT_TRUE(start.ok()) << start.error().message;
  EXPECT_EQ(*start, got[0].offset());
  ASSERT_TRUE(consumer->StoreOffset(tp, got[2].offset()).ok());
  ASSERT_TRUE(consumer->CommitStored().ok());
  start = consumer->StartOffset(tp, 10s);
  ASSERT_TRUE(start.ok()) << start.error().message;
  EXPECT_EQ(*start, got[2].offset());
  // Back to the second record: it and everything after it come again.
  ASSERT_TRUE(consumer->Seek(tp, got[1].offset(), 10s).ok());
  auto again = Take(*consumer, 3);
  ASSERT_EQ(again.size(), 3u);
  EXPECT_EQ(again[0].value(), "r1");
  EXPECT_EQ(again[2].value(), "r3");
}

}  // namespace
}  // namespace imgpipe
