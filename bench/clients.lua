-- wrk request script: each request carries one of 1000 X-Client-IDs, in turn.
local n = 0
request = function()
  n = n % 1000 + 1
  return wrk.format("GET", "/", { ["X-Client-ID"] = "client-" .. n })
end
