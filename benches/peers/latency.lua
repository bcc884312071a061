-- wrk script: optional pacing, and one JSON line with the latency percentiles
-- (wrk --latency stops at p99; this adds p99.9) and the error counts.
--
-- WRK_DELAY_MS=N: wait N ms after each response before the next request on
-- that connection, for a fixed offered load below saturation.

local pace = tonumber(os.getenv("WRK_DELAY_MS") or "0")

if pace > 0 then
  function delay()
    return pace
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
end
