// Driver of bench/storage.py: upload and read throughput of one BlobStore backend, through the same classes imgpipe
// uses. Prints one JSON object. Credentials come from the IMGPIPE_TEST_* variables that scripts/services/azurite and
// scripts/services/s3 write.
//   blob_store_bench --backend local|azure|s3 --size BYTES --count N --reps R [--dir DIR] [--encryption off|on|both]
//                    [--reads K]
// --reads K reads the objects K times per round (the read figures are per pass), so a profile of the reads is not
// drowned by the uploads.
// With --encryption both, every round runs twice, on the bare backend and through EncryptedBlobStore over the same
// backend (a LocalKeyProvider keyring in a scratch folder, the data key cache as `serve` configures it), in
// alternating order (off on, on off, off on...), so the on/off ratio compares passes taken moments apart. It also
// times the cipher alone over the same bytes each round (SegmentCipher sealing the round's objects into memory, then
// opening them into the read buffer, nothing else): what the encrypted passes cannot do without, whatever the store.
// With --encryption on, only the encrypted passes (and the cipher alone) run, to profile that path alone, e.g. under
// perf stat.
//   blob_store_bench --azure-sas   (prints a container SAS token for the reference client)
#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "core/clock.hpp"
#include "core/ids.hpp"
#include "crypto/encrypted_blob_store.hpp"
#include "crypto/envelope_format.hpp"
#include "crypto/local/local_key_provider.hpp"
#include "storage/azure/azure_blob_store.hpp"
#include "storage/azure/azure_signing.hpp"
#include "storage/local/local_blob_store.hpp"
#include "storage/s3/s3_blob_store.hpp"

using namespace imgpipe;

namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

[[noreturn]] void Die(const std::string& what) {
  std::cerr << "blob_store_bench: " << what << "\n";
  std::exit(1);
}

std::unique_ptr<BlobStore> Open(const std::string& backend, const std::string& dir, const std::string& unique) {
  if (backend == "azure") {
    AzureBlobStoreOptions o;
    o.endpoint = Env("IMGPIPE_TEST_AZURE_ENDPOINT");
    o.account = Env("IMGPIPE_TEST_AZURE_ACCOUNT");
    o.key = Env("IMGPIPE_TEST_AZURE_KEY");
    o.container_prefix = "b" + unique + "-";
    auto s = AzureBlobStore::Open(o);
    if (!s.ok()) Die(s.error().message);
    return std::move(s).value();
  }
  if (backend == "s3") {
    S3BlobStoreOptions o;
    o.endpoint = Env("IMGPIPE_TEST_S3_ENDPOINT");
    o.region = Env("IMGPIPE_TEST_S3_REGION");
    o.access_key = Env("IMGPIPE_TEST_S3_ACCESS_KEY");
    o.secret_key = Env("IMGPIPE_TEST_S3_SECRET_KEY");
    o.bucket = "b" + unique;
    auto s = S3BlobStore::Open(o);
    if (!s.ok()) Die(s.error().message);
    return std::move(s).value();
  }
  auto s = LocalBlobStore::Open(dir + "/" + unique);
  if (!s.ok()) Die(s.error().message);
  return std::move(s).value();
}

double Seconds(std::chrono::steady_clock::duration d) { return std::chrono::duration<double>(d).count(); }

// CPU seconds of this process (all its threads) so far: the client's own cost, apart from the server's time that the
// wall time includes.
double CpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

struct Round {
  double upload = 0, read = 0, read_cpu = 0;
};

// Uploads `count` copies of `data` under `prefix` in 1 MiB writes (as the intake's spool copy does), reads them back
// streamed `reads` times over (the read figures are per pass), checks the sizes, then deletes them.
Round TimeRound(BlobStore& store, const std::string& prefix, const std::string& data, size_t count, size_t reads,
                std::vector<char>& buf) {
  auto name = [&](size_t i) { return prefix + "/o" + std::to_string(i); };
  auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < count; ++i) {
    auto w = store.OpenWrite(kOriginals, name(i));
    if (!w.ok()) Die(w.error().message);
    for (size_t at = 0; at < data.size(); at += buf.size()) {
      if (auto s = (*w)->Write(std::string_view(data).substr(at, buf.size())); !s.ok()) Die(s.error().message);
    }
    if (auto info = (*w)->Commit(); !info.ok()) Die(info.error().message);
  }
  auto t1 = std::chrono::steady_clock::now();
  const double cpu1 = CpuSeconds();
  for (size_t i = 0; i < count * reads; ++i) {
    auto rd = store.OpenRead(kOriginals, name(i % count));
    if (!rd.ok()) Die(rd.error().message);
    size_t total = 0;
    for (;;) {
      auto n = (*rd)->Read(std::span<char>(buf.data(), buf.size()));
      if (!n.ok()) Die(n.error().message);
      if (*n == 0) break;
      total += *n;
    }
    if (total != data.size()) Die("short read");
  }
  auto t2 = std::chrono::steady_clock::now();
  const double cpu2 = CpuSeconds();
  for (size_t i = 0; i < count; ++i) (void)store.Delete(kOriginals, name(i));
  return {Seconds(t1 - t0), Seconds(t2 - t1) / static_cast<double>(reads), (cpu2 - cpu1) / static_cast<double>(reads)};
}

//! Seals `count` objects of `data` segment by segment into one arena, then opens every segment into `buf` (1 MiB,
//! reused, as the read passes use it): the cipher's own time for one round's bytes. The arena is as large as the
//! round's objects together (120 MiB for 3 x 32 MiB), so the opening reads it from memory as a read of large
//! objects reads the page cache; 40 x 256 KiB may partly stay in the CPU's last-level cache.
Round TimeCipher(const std::string& data, size_t count, std::vector<char>& buf) {
  EnvelopeHeader header;
  auto cipher = SegmentCipher::Create(DataKey::Random(), header, kOriginals, "cipher-alone");
  if (!cipher.ok()) Die(cipher.error().message);
  const size_t segments = std::max<size_t>(1, (data.size() + kSegmentBytes - 1) / kSegmentBytes);
  std::vector<char> arena(count * (data.size() + segments * kTagBytes));
  auto t0 = std::chrono::steady_clock::now();
  size_t at = 0;
  for (size_t i = 0; i < count; ++i) {
    for (size_t s = 0; s < segments; ++s) {
      auto piece = std::string_view(data).substr(s * kSegmentBytes, kSegmentBytes);
      if (auto ok = (*cipher)->SealTo(s, s + 1 == segments, piece, arena.data() + at); !ok.ok()) Die(ok.error().message);
      at += piece.size() + kTagBytes;
    }
  }
  auto t1 = std::chrono::steady_clock::now();
  at = 0;
  size_t into = 0;
  for (size_t i = 0; i < count; ++i) {
    for (size_t s = 0; s < segments; ++s) {
      const size_t sealed = std::min(kSegmentBytes, data.size() - s * kSegmentBytes) + kTagBytes;
      if (into + sealed > buf.size()) into = 0;
      auto n = (*cipher)->OpenTo(s, s + 1 == segments, arena.data() + at, sealed, buf.data() + into);
      if (!n.ok()) Die(n.error().message);
      at += sealed;
      into += *n;
    }
  }
  auto t2 = std::chrono::steady_clock::now();
  return {Seconds(t1 - t0), Seconds(t2 - t1)};
}

void PrintList(const char* field, const std::vector<Round>& rounds, double Round::*which) {
  std::cout << ", \"" << field << "\": [";
  for (size_t i = 0; i < rounds.size(); ++i) std::cout << (i ? ", " : "") << rounds[i].*which;
  std::cout << "]";
}

}  // namespace

int main(int argc, char** argv) {
  std::string backend = "local", dir = std::filesystem::temp_directory_path().string();
  std::string encryption = "off";
  size_t size = 1 << 20, count = 10, reps = 3, reads = 1;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : (Die("missing value for " + a), ""); };
    if (a == "--backend") backend = next();
    else if (a == "--size") size = std::stoull(next());
    else if (a == "--count") count = std::stoull(next());
    else if (a == "--reps") reps = std::stoull(next());
    else if (a == "--reads") reads = std::max<size_t>(1, std::stoull(next()));
    else if (a == "--dir") dir = next();
    else if (a == "--encryption") encryption = next();
    else if (a == "--azure-sas") {
      AzureServiceSas sas;
      sas.permissions = "racwdl";
      sas.expiry = "2099-01-01T00:00:00Z";
      sas.account = Env("IMGPIPE_TEST_AZURE_ACCOUNT");
      sas.container = next();
      auto token = MakeAzureServiceSas(sas, Env("IMGPIPE_TEST_AZURE_KEY"));
      if (!token.ok()) Die(token.error().message);
      std::cout << *token << "\n";
      return 0;
    } else Die("unknown argument " + a);
  }
  if (encryption != "off" && encryption != "on" && encryption != "both") Die("--encryption must be off, on or both");
  const std::string unique = HexEncode(RandomBytes(4));
  auto store = Open(backend, dir, unique);
  const std::string keys_dir = dir + "/" + unique + "-keys";
  SystemClock clock;
  std::unique_ptr<LocalKeyProvider> keys;
  std::unique_ptr<EncryptedBlobStore> encrypted;
  if (encryption != "off") {
    std::filesystem::create_directories(keys_dir);
    auto opened = LocalKeyProvider::Open(keys_dir + "/keyring.json", clock);
    if (!opened.ok()) Die(opened.error().message);
    keys = std::move(opened).value();
    // Options{} holds the same data key cache defaults as config's encryption.key_cache_age.
    encrypted = std::make_unique<EncryptedBlobStore>(*store, *keys, clock, EncryptedBlobStore::Options{});
  }
  std::string data(size, '\0');
  for (size_t i = 0; i < size; ++i) data[i] = static_cast<char>((i * 2654435761u) >> 13);
  std::vector<char> buf(1 << 20);
  std::vector<Round> plain, sealed, cipher_alone;
  // Odd rounds run the encrypted pass first: whichever pass goes second inherits the first one's writeback and
  // freed pages, and that must not always be the same mode.
  for (size_t r = 0; r < reps; ++r) {
    const bool sealed_first = encrypted && r % 2 == 1;
    auto sealed_pass = [&] {
      sealed.push_back(TimeRound(*encrypted, "e" + std::to_string(r), data, count, reads, buf));
    };
    if (sealed_first) sealed_pass();
    if (encryption != "on") plain.push_back(TimeRound(*store, "r" + std::to_string(r), data, count, reads, buf));
    if (encrypted && !sealed_first) sealed_pass();
    if (encrypted) cipher_alone.push_back(TimeCipher(data, count, buf));
  }
  std::cout << "{\"backend\": \"" << backend << "\", \"size\": " << size << ", \"count\": " << count;
  PrintList("upload_seconds", plain, &Round::upload);
  PrintList("read_seconds", plain, &Round::read);
  PrintList("read_cpu_seconds", plain, &Round::read_cpu);
  if (encrypted) {
    PrintList("encrypted_upload_seconds", sealed, &Round::upload);
    PrintList("encrypted_read_seconds", sealed, &Round::read);
    PrintList("encrypted_read_cpu_seconds", sealed, &Round::read_cpu);
    PrintList("cipher_seal_seconds", cipher_alone, &Round::upload);
    PrintList("cipher_open_seconds", cipher_alone, &Round::read);
  }
  std::cout << ", \"namespace\": \"" << unique << "\"}\n";
  if (backend == "local") std::filesystem::remove_all(dir + "/" + unique);
  std::filesystem::remove_all(keys_dir);
  return 0;
}
