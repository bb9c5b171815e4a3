// `imgpipe reprocess --script NAME --since T [--until T]`: queues stored images again, to be processed by a script's
// current version (or "default"), e.g. after pushing a new version. Wiring only.
#include <iostream>

#include "cli/common.hpp"
#include "scripts/script_store.hpp"

namespace imgpipe {

int RunReprocess(int argc, char** argv) {
  auto args = ParseArgs(argc, argv, 2, {"config", "data-dir", "script", "since", "until"});
  if (!args) return kExitUsage;
  auto script = args->Get("script");
  auto since = args->Get("since");
  if (!script || !since || !args->positional.empty()) {
    std::cerr << "usage: imgpipe reprocess --script NAME|default --since TIME [--until TIME] [--data-dir DIR]\n"
                 "  TIME is RFC 3339, e.g. 2026-11-25T00:00:00Z; images received in [since, until) are queued again\n";
    return kExitUsage;
  }
  ImageFilter filter;
  filter.newest_first = false;
  filter.limit = 500;
  TimePoint from;
  if (!ParseRfc3339(*since, &from)) {
    std::cerr << "imgpipe: --since " << *since << " is not an RFC 3339 time (e.g. 2026-11-25T00:00:00Z)\n";
    return kExitUsage;
  }
  filter.received_from = from;
  if (auto until = args->Get("until")) {
    TimePoint to;
    if (!ParseRfc3339(*until, &to)) {
      std::cerr << "imgpipe: --until " << *until << " is not an RFC 3339 time\n";
      return kExitUsage;
    }
    filter.received_to = to;
  }
  auto config = LoadConfigFromArgs(*args);
  if (!config) return kExitUsage;
  SystemClock clock;
  if (*script != "default") {
    auto blobs = OpenBlobStack(*config, clock, /*wait_for_keys=*/true);
    if (!blobs.ok()) {
      std::cerr << "imgpipe: cannot open blob storage: " << blobs.error().message << "\n";
      return kExitFailure;
    }
    auto current = ScriptStore(blobs->store(), clock).CurrentVersion(*script);
    if (!current.ok()) {
      std::cerr << "imgpipe: " << current.error().message << "\n";
      return kExitUsage;
    }
  }
  auto wh = OpenWarehouse(*config, clock);
  if (!wh.ok()) {
    std::cerr << "imgpipe: cannot open the warehouse: " << wh.error().message << "\n";
    return kExitFailure;
  }
  int64_t queued = 0, skipped = 0;
  for (;;) {
    auto page = wh->store->ListImages(filter);
    if (!page.ok()) {
      std::cerr << "imgpipe: cannot list images: " << page.error().message << "\n";
      return kExitFailure;
    }
    for (const ImageRecord& image : page->items) {
      auto requeued = wh->store->RequeueImage(image.id, *script, clock.Now());
      if (!requeued.ok()) {
        std::cerr << "imgpipe: cannot queue " << image.id.value() << ": " << requeued.error().message << "\n";
        return kExitFailure;
      }
      ++(*requeued ? queued : skipped);
    }
    if (page->next_cursor.empty()) break;
    filter.after_id = page->next_cursor;
  }
  std::cout << "queued " << queued << " image(s) for " << *script << "; skipped " << skipped
            << " (still queued or processing, or past retention)\n";
  return kExitOk;
}

}  // namespace imgpipe
