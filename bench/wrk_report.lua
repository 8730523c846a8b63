-- Shared by post.lua and get.lua: print wrk's summary as one JSON line after a marker, so
-- bench/run.py reads exact counts and percentiles instead of scraping the human report.
function report(summary, latency)
  local errors = summary.errors
  io.write("BENCH-JSON ")
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "socket_errors": %d, "non_2xx": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration,
    errors.connect + errors.read + errors.write + errors.timeout, errors.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
