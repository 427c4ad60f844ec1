-- POST a pay-rate change to a random employee, each request with its own Idempotency-Key
local ids = {}
for line in io.lines(os.getenv("EMPLOYEES") or "employees.txt") do ids[#ids + 1] = line end
local token = os.getenv("TOKEN")
local run = os.getenv("RUN") or "r"
local counter = 0
local tid = 0
setup = function(thread) tid = tid + 1; thread:set("tid", tid) end
request = function()
  counter = counter + 1
  local id = ids[math.random(#ids)]
  local body = string.format('{"rate":{"amount":{"amount":"%d.00","currency":"USD"},"basis":"monthly"},"effective_from":"2026-01-17","reason":"bench"}', 5000 + counter % 1000)
  return wrk.format("POST", "/v1/employees/" .. id .. "/pay-rate",
    {["Authorization"] = "Bearer " .. token, ["content-type"] = "application/json",
     ["Idempotency-Key"] = string.format("pr-%s-%s-%d", run, tostring(tid), counter)}, body)
end
local non2xx = 0
response = function(status, headers, body) if status >= 300 then non2xx = non2xx + 1 end end
