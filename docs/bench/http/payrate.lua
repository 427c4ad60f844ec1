-- POST a pay-rate change to a random employee, each request with its own Idempotency-Key.
-- wrk runs this file once per thread, each in a Lua state of its own: `setup` (in the main
-- state) gives each thread its number as a global, `init` (in the thread's state) seeds its
-- random employees with it. A thread number kept in a local, or one seed for all threads,
-- made every thread send the same keys for the same employees: half the requests were
-- replays of the other thread's, not commands.
local ids = {}
for line in io.lines(os.getenv("EMPLOYEES") or "employees.txt") do ids[#ids + 1] = line end
local token = os.getenv("TOKEN")
local run = os.getenv("RUN") or "r"
local counter = 0
local threads = 0
setup = function(thread) threads = threads + 1; thread:set("tid", threads) end
init = function(args) math.randomseed(os.time() * 64 + tid) end
request = function()
  counter = counter + 1
  local id = ids[math.random(#ids)]
  local body = string.format('{"rate":{"amount":{"amount":"%d.00","currency":"USD"},"basis":"monthly"},"effective_from":"2026-01-17","reason":"bench"}', 5000 + counter % 1000)
  return wrk.format("POST", "/v1/employees/" .. id .. "/pay-rate",
    {["Authorization"] = "Bearer " .. token, ["content-type"] = "application/json",
     ["Idempotency-Key"] = string.format("pr-%s-%d-%d", run, tid, counter)}, body)
end
