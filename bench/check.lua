-- wrk request script: POST /check for one of 1000 identifiers, in turn (the tiered check
-- service's request).
local n = 0
request = function()
  n = n % 1000 + 1
  local body = '{"identifier": "user:' .. n .. '"}'
  return wrk.format("POST", "/check", { ["Content-Type"] = "application/json" }, body)
end
