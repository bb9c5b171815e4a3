-- wrk script for bench/ingest.sh: POSTs the same JPEG on every request, with the API key, and prints the results
-- as one JSON line (prefixed "BENCH_JSON ") so the driver does not have to parse wrk's text report.
-- Environment: BENCH_BODY (file to upload), BENCH_KEY (API key; empty for the nginx reference).

local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "image/jpeg"
local key = os.getenv("BENCH_KEY") or ""
if key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end

-- Per-thread status counts; wrk's own summary only counts statuses >= 400 as errors.
statuses = {}  -- global: done() reads it from each thread with thread:get()
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local codes = {}
  for _, t in ipairs(threads) do
    -- Each thread's table comes back through its Lua state; join them into one "code=count" list.
    local s = t:get("statuses")
    for code, count in pairs(s) do
      codes[code] = (codes[code] or 0) + count
    end
  end
  local parts = {}
  for code, count in pairs(codes) do
    table.insert(parts, string.format('"%d": %d', code, count))
  end
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "seconds": %.3f, "requests_per_second": %.2f, "bytes_read": %d, ' ..
    '"latency_p50_ms": %.3f, "latency_p90_ms": %.3f, "latency_p99_ms": %.3f, "latency_max_ms": %.3f, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, "statuses": {%s}}\n',
    summary.requests, seconds, summary.requests / seconds, summary.bytes,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status,
    summary.errors.timeout, table.concat(parts, ", ")))
end
