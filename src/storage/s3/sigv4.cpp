#include "storage/s3/sigv4.hpp"

#include <algorithm>
#include <cctype>
#include <ctime>
#include <map>
#include <vector>

#include "core/ids.hpp"
#include "http_client/encoding.hpp"

namespace imgpipe {

namespace {

// Trims and collapses runs of spaces, as the canonical header form requires.
std::string CanonicalValue(std::string_view v) {
  std::string out;
  bool space = false;
  for (char c : v) {
    if (c == ' ' || c == '\t') {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

std::string CanonicalQuery(std::string_view query) {
  std::vector<std::pair<std::string, std::string>> params;
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    if (!pair.empty()) {
      size_t eq = pair.find('=');
      std::string name = UriEncode(UriDecode(pair.substr(0, eq)), false);
      std::string value = eq == std::string_view::npos ? "" : UriEncode(UriDecode(pair.substr(eq + 1)), false);
      params.emplace_back(std::move(name), std::move(value));
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  std::sort(params.begin(), params.end());
  std::string out;
  for (const auto& [k, v] : params) out += (out.empty() ? "" : "&") + k + "=" + v;
  return out;
}

}  // namespace

std::string AmzDate(TimePoint t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

SigV4Signature SignV4(std::string_view method, std::string_view target, const HttpHeaders& headers,
                      std::string_view payload_hash, const SigV4Key& key, std::string_view amz_date) {
  SigV4Signature out;
  size_t q = target.find('?');
  std::string_view path = target.substr(0, q);
  std::string_view query = q == std::string_view::npos ? std::string_view{} : target.substr(q + 1);

  std::map<std::string, std::string> canonical_headers;
  for (const auto& [k, v] : headers) {
    std::string name = AsciiLower(k);
    std::string value = CanonicalValue(v);
    auto [it, inserted] = canonical_headers.emplace(name, value);
    if (!inserted) it->second += "," + value;
  }
  std::string header_block;
  for (const auto& [k, v] : canonical_headers) {
    header_block += k + ":" + v + "\n";
    out.signed_headers += (out.signed_headers.empty() ? "" : ";") + k;
  }

  out.canonical_request = std::string(method) + "\n" + std::string(path.empty() ? "/" : path) + "\n" +
                          CanonicalQuery(query) + "\n" + header_block + "\n" + out.signed_headers + "\n" +
                          std::string(payload_hash);

  std::string_view date = amz_date.substr(0, 8);
  std::string scope = std::string(date) + "/" + key.region + "/" + key.service + "/aws4_request";
  out.string_to_sign = "AWS4-HMAC-SHA256\n" + std::string(amz_date) + "\n" + scope + "\n" +
                       Sha256Hex(out.canonical_request);

  std::string k = encoding::HmacSha256("AWS4" + key.secret_key, date);
  k = encoding::HmacSha256(k, key.region);
  k = encoding::HmacSha256(k, key.service);
  k = encoding::HmacSha256(k, "aws4_request");
  out.signature = HexEncode(encoding::HmacSha256(k, out.string_to_sign));
  out.authorization = "AWS4-HMAC-SHA256 Credential=" + key.access_key + "/" + scope +
                      ", SignedHeaders=" + out.signed_headers + ", Signature=" + out.signature;
  return out;
}

}  // namespace imgpipe
