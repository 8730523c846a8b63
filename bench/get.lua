-- wrk: GET /task/{id} over the job ids listed (one a line) in the file BENCH_IDS names.
dofile(os.getenv("BENCH_LUA_DIR") .. "/wrk_report.lua")

local ids = {}
for line in io.lines(os.getenv("BENCH_IDS")) do
  ids[#ids + 1] = line
end
local counter = 0

request = function()
  counter = counter + 1
  return wrk.format("GET", "/task/" .. ids[(counter % #ids) + 1])
end

done = function(summary, latency, _)
  report(summary, latency)
end
