#include "storage/azure/azure_signing.hpp"

#include <algorithm>
#include <cctype>
#include <map>
#include <vector>

#include "http_client/encoding.hpp"

namespace imgpipe {

namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::string HeaderOrEmpty(const HttpHeaders& headers, std::string_view name) {
  auto v = FindHeader(headers, name);
  return v ? std::string(Trim(*v)) : std::string();
}

}  // namespace

std::string AzureSharedKeyStringToSign(std::string_view method, std::string_view target, const HttpHeaders& headers,
                                       uint64_t content_length, std::string_view account) {
  std::string out(method);
  out += '\n';
  out += HeaderOrEmpty(headers, "Content-Encoding") + '\n';
  out += HeaderOrEmpty(headers, "Content-Language") + '\n';
  out += (content_length == 0 ? std::string() : std::to_string(content_length)) + '\n';
  for (std::string_view name : {"Content-MD5", "Content-Type", "Date", "If-Modified-Since", "If-Match",
                                "If-None-Match", "If-Unmodified-Since", "Range"}) {
    out += HeaderOrEmpty(headers, name) + '\n';
  }

  std::map<std::string, std::string> ms_headers;
  for (const auto& [k, v] : headers) {
    std::string name = AsciiLower(k);
    if (name.starts_with("x-ms-")) ms_headers[name] = std::string(Trim(v));
  }
  for (const auto& [k, v] : ms_headers) out += k + ":" + v + "\n";

  size_t q = target.find('?');
  out += "/";
  out += account;
  out += target.substr(0, q);
  if (q != std::string_view::npos) {
    std::map<std::string, std::vector<std::string>> params;
    std::string_view query = target.substr(q + 1);
    while (!query.empty()) {
      size_t amp = query.find('&');
      std::string_view pair = query.substr(0, amp);
      size_t eq = pair.find('=');
      std::string name = AsciiLower(UriDecode(pair.substr(0, eq)));
      std::string value = eq == std::string_view::npos ? std::string() : UriDecode(pair.substr(eq + 1));
      if (!name.empty()) params[name].push_back(std::move(value));
      if (amp == std::string_view::npos) break;
      query.remove_prefix(amp + 1);
    }
    for (auto& [name, values] : params) {
      std::sort(values.begin(), values.end());
      out += "\n" + name + ":";
      for (size_t i = 0; i < values.size(); ++i) out += (i ? "," : "") + values[i];
    }
  }
  return out;
}

Result<std::string> AzureSharedKeySignature(std::string_view string_to_sign, std::string_view base64_key) {
  auto key = encoding::Base64Decode(base64_key);
  if (!key || key->empty()) {
    return MakeError(ErrorKind::kInvalidArgument,
                     "the Azure account key is not valid base64 (storage.azure.key); copy it from the portal's "
                     "Access keys page");
  }
  return encoding::Base64Encode(encoding::HmacSha256(*key, string_to_sign));
}

std::string AzureServiceSasStringToSign(const AzureServiceSas& sas) {
  std::string resource = "/blob/" + sas.account + "/" + sas.container;
  if (!sas.blob.empty()) resource += "/" + sas.blob;
  std::string out;
  out += sas.permissions + "\n" + sas.start + "\n" + sas.expiry + "\n" + resource + "\n";
  out += "\n";  // signed identifier
  out += "\n";  // signed IP
  out += sas.protocol + "\n";
  out += sas.version + "\n";
  out += std::string(sas.blob.empty() ? "c" : "b") + "\n";
  out += "\n";  // snapshot time
  out += "\n";  // encryption scope
  out += "\n\n\n\n";  // rscc, rscd, rsce, rscl; rsct is last and has no newline after it
  return out;
}

Result<std::string> MakeAzureServiceSas(const AzureServiceSas& sas, std::string_view base64_key) {
  IMGPIPE_ASSIGN_OR_RETURN(std::string sig, AzureSharedKeySignature(AzureServiceSasStringToSign(sas), base64_key));
  std::string out = "sv=" + UriEncode(sas.version, false) + "&sp=" + UriEncode(sas.permissions, false);
  if (!sas.start.empty()) out += "&st=" + UriEncode(sas.start, false);
  out += "&se=" + UriEncode(sas.expiry, false);
  if (!sas.protocol.empty()) out += "&spr=" + UriEncode(sas.protocol, false);
  out += std::string("&sr=") + (sas.blob.empty() ? "c" : "b");
  out += "&sig=" + UriEncode(sig, false);
  return out;
}

}  // namespace imgpipe
