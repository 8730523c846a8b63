-- wrk: POST /process/{id} with a different item id on every request.
dofile(os.getenv("BENCH_LUA_DIR") .. "/wrk_report.lua")

local counter = 0
offset = 0  -- set per thread by setup(); a global, so thread:set reaches it
local threads = 0

setup = function(thread)
  threads = threads + 1
  thread:set("offset", threads * 100000000)
end

request = function()
  counter = counter + 1
  return wrk.format("POST", "/process/" .. (offset + counter))
end

done = function(summary, latency, _)
  report(summary, latency)
end
