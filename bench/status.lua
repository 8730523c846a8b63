-- wrk: count answers by HTTP status (every thread's own table, summed in done()), for the overload
-- runs (bench/overload.py). OVERLOAD_PATH: the path to GET, or "POST /process" for new jobs.
local path = os.getenv("OVERLOAD_PATH")
local threads = {}
local counter = 0
offset = 0  -- set per thread by setup(); a global, so thread:set reaches it
counts = {}

setup = function(thread)
  table.insert(threads, thread)
  thread:set("offset", #threads * 100000000)
end

init = function(_)
  counts = {}
end

request = function()
  if path == "POST /process" then
    counter = counter + 1
    return wrk.format("POST", "/process/" .. (offset + counter))
  end
  return wrk.format("GET", path)
end

response = function(status, _, _)
  counts[status] = (counts[status] or 0) + 1
end

done = function(summary, latency, _)
  local totals = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("counts")) do
      totals[status] = (totals[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(totals) do
    parts[#parts + 1] = string.format('"%d": %d', status, count)
  end
  local errors = summary.errors
  io.write("OVERLOAD-JSON ")
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "timeouts": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"statuses": {%s}}\n',
    summary.requests, summary.duration, errors.connect, errors.read, errors.write,
    errors.timeout, latency:percentile(50), latency:percentile(99), latency.max,
    table.concat(parts, ", ")))
end
