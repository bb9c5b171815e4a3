#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/result.hpp"
#include "http_client/http_client.hpp"

namespace imgpipe {

//! Pure functions that sign Azure Blob requests; no I/O, no clock (callers pass the date as an x-ms-date header).

//! The Shared Key string-to-sign for the Blob service (service versions 2015-02-21 and later): the verb, the twelve
//! standard headers in their fixed order (Content-Length empty when zero), the x-ms-* headers lowercased and sorted,
//! and the canonicalized resource "/<account><path>" followed by each query parameter as "\nname:value[,value]"
//! (names lowercased and sorted, values percent-decoded and sorted). `target` is the path and query as sent.
std::string AzureSharedKeyStringToSign(std::string_view method, std::string_view target, const HttpHeaders& headers,
                                       uint64_t content_length, std::string_view account);

//! base64(HMAC-SHA256(base64-decoded account key, string_to_sign)). kInvalidArgument if the key is not base64.
Result<std::string> AzureSharedKeySignature(std::string_view string_to_sign, std::string_view base64_key);

//! The fields of a service SAS for a container or a blob (service version 2020-12-06 and later layout).
struct AzureServiceSas {
  std::string permissions;  //!< e.g. "racwdl"
  std::string start;        //!< ISO 8601 UTC, may be empty
  std::string expiry;       //!< ISO 8601 UTC
  std::string account;
  std::string container;
  std::string blob;         //!< empty for a container SAS
  std::string version = "2022-11-02";
  std::string protocol;     //!< "https", "https,http" or empty
};

//! The SAS string-to-sign: permissions, start, expiry, "/blob/<account>/<container>[/<blob>]", identifier, IP,
//! protocol, version, resource ("c" or "b"), snapshot time, encryption scope and the five response-header overrides,
//! one per line (the unused ones empty).
std::string AzureServiceSasStringToSign(const AzureServiceSas& sas);

//! The SAS token (query string without '?': sv, sp, st, se, spr, sr, sig) signed with the account key.
Result<std::string> MakeAzureServiceSas(const AzureServiceSas& sas, std::string_view base64_key);

}  // namespace imgpipe
