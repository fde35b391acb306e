-- tollgate fixed window: one atomic decision over all bands of one (rule, client).
-- Mirrors src/algorithm.rs (fixed_window) operation for operation.
--
-- KEYS[1]  a hash; for band k the fields win/count (k = 1) or win:k/count:k (k > 1):
--            win    the window's index: floor(Redis TIME in µs / window)
--            count  requests (cost units) counted in that window
--          Windows align to Unix time. The key expires when the last window ends.
-- ARGV[1]  cost (integer >= 1)
-- ARGV[2]  n: the number of bands
-- ARGV[1+2k], ARGV[2+2k]  band k: capacity (integer >= 1), window length in µs (integer >= 1)
--
-- Returns {admitted, now_ms, then for each band: admitted, remaining, retry_after_ms,
-- reset_after_ms}. Nothing is written unless every band admits.
local cost = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

local fields = {}
for k = 1, n do
  local suffix = ''
  if k > 1 then suffix = ':' .. k end
  fields[2 * k - 1] = 'win' .. suffix
  fields[2 * k] = 'count' .. suffix
end
local stored = redis.call('HMGET', KEYS[1], unpack(fields))

local admitted = 1
local result = {0, math.floor(now / 1000)}
local indexes = {}
local counted = {}
local ttl_us = 0
for k = 1, n do
  local capacity = tonumber(ARGV[1 + 2 * k])
  local window = tonumber(ARGV[2 + 2 * k])
  local index = math.floor(now / window)
  if index * window > now then index = index - 1 end
  if (index + 1) * window <= now then index = index + 1 end
  local win = tonumber(stored[2 * k - 1])
  -- A clock that went backwards stays in the stored window.
  if win ~= nil and win > index then index = win end
  local count = 0
  if win == index then count = tonumber(stored[2 * k]) or 0 end
  local ok = 0
  local until_end = (index + 1) * window - now
  local retry_us = until_end
  if count + cost <= capacity then
    ok = 1
    retry_us = 0
    counted[k] = count + cost
  else
    admitted = 0
    counted[k] = count
  end
  indexes[k] = index
  local reset_us = 0
  if counted[k] > 0 then reset_us = until_end end
  ttl_us = math.max(ttl_us, reset_us)
  local base = 2 + 4 * (k - 1)
  result[base + 1] = ok
  result[base + 2] = math.floor(math.max(0, capacity - counted[k]))
  result[base + 3] = math.ceil(retry_us / 1000)
  result[base + 4] = math.ceil(reset_us / 1000)
end

result[1] = admitted
if admitted == 1 then
  local values = {}
  for k = 1, n do
    values[4 * k - 3] = fields[2 * k - 1]
    values[4 * k - 2] = indexes[k]
    values[4 * k - 1] = fields[2 * k]
    values[4 * k] = counted[k]
  end
  redis.call('HSET', KEYS[1], unpack(values))
  redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil(ttl_us / 1000)))
end
return result
