// Pure functions of the PostgreSQL backend: no server needed.
#include "warehouse/postgres/postgres_database.hpp"

#include <gtest/gtest.h>

namespace imgpipe {
namespace {

TimePoint At(const char* rfc3339) {
  TimePoint t;
  EXPECT_TRUE(ParseRfc3339(rfc3339, &t)) << rfc3339;
  return t;
}

TEST(PgTimeTest, FormatsUtcWithMicroseconds) {
  EXPECT_EQ(FormatPgTime(At("2026-01-10T12:00:00Z")), "2026-01-10T12:00:00.000000Z");
  EXPECT_EQ(FormatPgTime(At("2026-01-10T11:59:59.123Z") + std::chrono::microseconds(456)),
            "2026-01-10T11:59:59.123456Z");
  EXPECT_EQ(FormatPgTime(FromUnixMicros(0)), "1970-01-01T00:00:00.000000Z");
  // Before the epoch the remainder must not go negative.
  EXPECT_EQ(FormatPgTime(FromUnixMicros(-1)), "1969-12-31T23:59:59.999999Z");
  EXPECT_EQ(FormatPgTime(At("2024-02-29T23:59:59Z")), "2024-02-29T23:59:59.000000Z");
}

TEST(PgTimeTest, ParsesWhatAUtcSessionPrintsAndRoundTrips) {
  TimePoint t;
  ASSERT_TRUE(ParsePgTime("2026-01-10 12:00:00+00", &t));
  EXPECT_EQ(t, At("2026-01-10T12:00:00Z"));
  ASSERT_TRUE(ParsePgTime("2026-01-10 12:00:00.5+00", &t));
  EXPECT_EQ(t, At("2026-01-10T12:00:00.5Z"));
  ASSERT_TRUE(ParsePgTime("2026-01-10 12:00:00.000001+00", &t));
  EXPECT_EQ(ToUnixMicros(t), ToUnixMicros(At("2026-01-10T12:00:00Z")) + 1);
  // Other offsets (a session not in UTC) and RFC 3339 are understood too.
  ASSERT_TRUE(ParsePgTime("2026-01-10 13:30:00+01:30", &t));
  EXPECT_EQ(t, At("2026-01-10T12:00:00Z"));
  ASSERT_TRUE(ParsePgTime("2026-01-10 07:00:00-05", &t));
  EXPECT_EQ(t, At("2026-01-10T12:00:00Z"));
  ASSERT_TRUE(ParsePgTime("2026-01-10T12:00:00.250Z", &t));
  EXPECT_EQ(t, At("2026-01-10T12:00:00.25Z"));

  for (int64_t us : {int64_t{0}, int64_t{-1}, int64_t{1'767'225'599'999'999}, int64_t{1'700'000'000'123'456}}) {
    ASSERT_TRUE(ParsePgTime(FormatPgTime(FromUnixMicros(us)), &t)) << us;
    EXPECT_EQ(ToUnixMicros(t), us);
  }
  for (const char* bad : {"", "infinity", "2026-01-10", "2026-01-10 12:00:00", "2026-13-10 12:00:00+00",
                          "2026-02-30 12:00:00+00", "2026-01-10 12:00:00.+00", "2026-01-10 12:00:00+0x",
                          "2026-01-10 12:00:00 BC"}) {
    EXPECT_FALSE(ParsePgTime(bad, &t)) << bad;
  }
}

TEST(PgTimeTest, RewritesUtcOutputAsRfc3339WithAtLeastMilliseconds) {
  EXPECT_EQ(PgTimeToRfc3339("2026-01-10 12:00:00+00"), "2026-01-10T12:00:00.000Z");
  EXPECT_EQ(PgTimeToRfc3339("2026-01-10 12:00:00.5+00"), "2026-01-10T12:00:00.500Z");
  EXPECT_EQ(PgTimeToRfc3339("2026-01-10 12:00:00.123+00"), "2026-01-10T12:00:00.123Z");
  EXPECT_EQ(PgTimeToRfc3339("2026-01-10 12:00:00.123456+00"), "2026-01-10T12:00:00.123456Z");
  EXPECT_EQ(PgTimeToRfc3339("2026-01-10 12:00:00+01"), std::nullopt);
  EXPECT_EQ(PgTimeToRfc3339("infinity"), std::nullopt);
  EXPECT_EQ(PgTimeToRfc3339("12345-01-10 12:00:00+00"), std::nullopt);
}

TEST(PgErrorKindTest, MapsSqlStatesToWhatCallersBranchOn) {
  EXPECT_EQ(PgErrorKind("23505"), ErrorKind::kConflict);       // unique_violation
  EXPECT_EQ(PgErrorKind("23503"), ErrorKind::kInvalidArgument);  // foreign_key_violation
  EXPECT_EQ(PgErrorKind("23514"), ErrorKind::kInvalidArgument);  // check_violation
  EXPECT_EQ(PgErrorKind("22P02"), ErrorKind::kInvalidArgument);  // invalid_text_representation (bad JSON)
  EXPECT_EQ(PgErrorKind("40001"), ErrorKind::kRetry);            // serialization_failure
  EXPECT_EQ(PgErrorKind("40P01"), ErrorKind::kRetry);            // deadlock_detected
  EXPECT_EQ(PgErrorKind("08006"), ErrorKind::kUnavailable);      // connection_failure
  EXPECT_EQ(PgErrorKind("57P01"), ErrorKind::kUnavailable);      // admin_shutdown
  EXPECT_EQ(PgErrorKind("57014"), ErrorKind::kUnavailable);      // query_canceled (statement timeout)
  EXPECT_EQ(PgErrorKind("55P03"), ErrorKind::kUnavailable);      // lock_not_available
  EXPECT_EQ(PgErrorKind("53100"), ErrorKind::kUnavailable);      // disk_full
  EXPECT_EQ(PgErrorKind("53300"), ErrorKind::kUnavailable);      // too_many_connections
  EXPECT_EQ(PgErrorKind("42P01"), ErrorKind::kInternal);         // undefined_table: our bug, not the caller's
  EXPECT_EQ(PgErrorKind(""), ErrorKind::kInternal);
  EXPECT_TRUE(PgConnectionLost("08003"));
  EXPECT_TRUE(PgConnectionLost("57P02"));
  EXPECT_FALSE(PgConnectionLost("57014"));
  EXPECT_FALSE(PgConnectionLost("23505"));
}

TEST(PgUrlTest, DescriptionsNeverShowThePassword) {
  EXPECT_EQ(DescribePgUrl("postgresql://bi:s3cret@db.internal:6432/imgpipe?sslmode=require"),
            "postgresql://bi@db.internal:6432/imgpipe");
  EXPECT_EQ(DescribePgUrl("host=10.0.0.5 port=5432 dbname=warehouse user=imgpipe password=s3cret"),
            "postgresql://imgpipe@10.0.0.5:5432/warehouse");
  EXPECT_EQ(DescribePgUrl("postgresql:///imgpipe"), "postgresql://localhost/imgpipe");
  EXPECT_EQ(DescribePgUrl("postgresql://u:pw@h/d").find("pw"), std::string::npos);
}

TEST(PgUrlTest, PointsAConnectionStringAtAnotherDatabase) {
  auto url = PgUrlWithDatabase("postgresql://postgres@127.0.0.1:5433/imgpipe?application_name=x", "other_db");
  ASSERT_TRUE(url);
  EXPECT_EQ(DescribePgUrl(*url), "postgresql://postgres@127.0.0.1:5433/other_db");
  EXPECT_NE(url->find("application_name='x'"), std::string::npos) << *url;
  // Values with quotes and backslashes survive.
  auto quoted = PgUrlWithDatabase(R"(host=h password='it\'s\\')", "d");
  ASSERT_TRUE(quoted);
  EXPECT_NE(quoted->find(R"(password='it\'s\\')"), std::string::npos) << *quoted;
  EXPECT_FALSE(PgUrlWithDatabase("postgresql://[broken", "d"));
}

TEST(PgParamsTest, SendsTypedTextValues) {
  PgParams p;
  p.Text("a").Int(-7).Double(0.1).Bool(true).Time(At("2026-01-10T12:00:00Z")).Null().OptionalInt(std::nullopt);
  ASSERT_EQ(p.size(), 7u);
  EXPECT_EQ(p.values()[0], "a");
  EXPECT_EQ(p.types()[0], pg_oid::kUnknownInfer);
  EXPECT_EQ(p.values()[1], "-7");
  EXPECT_EQ(p.types()[1], pg_oid::kInt8);
  EXPECT_EQ(p.values()[2], "0.1");  // shortest exact text, not 0.10000000000000001
  EXPECT_EQ(p.types()[2], pg_oid::kFloat8);
  EXPECT_EQ(p.values()[3], "true");
  EXPECT_EQ(p.values()[4], "2026-01-10T12:00:00.000000Z");
  EXPECT_EQ(p.types()[4], pg_oid::kTimestampTz);
  EXPECT_FALSE(p.values()[5]);
  EXPECT_FALSE(p.values()[6]);
  EXPECT_EQ(p.types()[6], pg_oid::kInt8);
}

TEST(PgConnectionTest, AnUnreachableServerIsUnavailableAndNamesItWithoutThePassword) {
  // Port 1 on loopback: nothing listens there, the connection is refused at once.
  auto conn = PgConnection::Connect("postgresql://someone:hunter2@127.0.0.1:1/imgpipe?connect_timeout=2");
  ASSERT_FALSE(conn.ok());
  EXPECT_EQ(conn.error().kind, ErrorKind::kUnavailable);
  EXPECT_NE(conn.error().message.find("postgresql://someone@127.0.0.1:1/imgpipe"), std::string::npos)
      << conn.error().message;
  EXPECT_EQ(conn.error().message.find("hunter2"), std::string::npos);

  auto bad = PgConnection::Connect("postgresql://[broken");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().kind, ErrorKind::kInvalidArgument);
  PostgresDatabase::Options options;
  auto empty = PostgresDatabase::Open(options);
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.error().kind, ErrorKind::kInvalidArgument);
}

}  // namespace
}  // namespace imgpipe
