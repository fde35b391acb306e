-- tollgate sliding window (two-counter estimate): one atomic decision over all bands of one
-- (rule, client). Mirrors src/algorithm.rs (sliding_window) operation for operation.
--
-- KEYS[1]  a hash; for band k the fields win/count/prev (k = 1) or win:k/count:k/prev:k:
--            win    the current window's index: floor(Redis TIME in µs / window)
--            count  cost units counted in that window
--            prev   cost units counted in the window before it
--          estimate = prev × (share of the current window still ahead) + count.
--          The key expires when both counted windows have passed.
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
  fields[3 * k - 2] = 'win' .. suffix
  fields[3 * k - 1] = 'count' .. suffix
  fields[3 * k] = 'prev' .. suffix
end
local stored = redis.call('HMGET', KEYS[1], unpack(fields))

local admitted = 1
local result = {0, math.floor(now / 1000)}
local indexes = {}
local counted = {}
local previous = {}
local ttl_us = 0
for k = 1, n do
  local capacity = tonumber(ARGV[1 + 2 * k])
  local window = tonumber(ARGV[2 + 2 * k])
  local index = math.floor(now / window)
  if index * window > now then index = index - 1 end
  if (index + 1) * window <= now then index = index + 1 end
  local win = tonumber(stored[3 * k - 2])
  -- A clock that went backwards stays in the stored window.
  if win ~= nil and win > index then index = win end
  local current = 0
  local prev = 0
  if win == index then
    current = tonumber(stored[3 * k - 1]) or 0
    prev = tonumber(stored[3 * k]) or 0
  elseif win == index - 1 then
    prev = tonumber(stored[3 * k - 1]) or 0
  end
  local start = index * window
  local weight = ((start + window) - now) / window
  local estimate = prev * weight + current
  local ok = 0
  local retry_us = 0
  if estimate + cost <= capacity then
    ok = 1
    counted[k] = current + cost
  else
    admitted = 0
    counted[k] = current
    if current + cost <= capacity then
      local weight_needed = (capacity - current - cost) / prev
      retry_us = (start + (1 - weight_needed) * window) - now
    else
      local weight_needed = (capacity - cost) / current
      retry_us = ((start + window) + (1 - weight_needed) * window) - now
    end
  end
  local reset_us = 0
  if counted[k] > 0 then
    reset_us = (start + 2 * window) - now
  elseif prev > 0 then
    reset_us = (start + window) - now
  end
  indexes[k] = index
  previous[k] = prev
  ttl_us = math.max(ttl_us, reset_us)
  local base = 2 + 4 * (k - 1)
  result[base + 1] = ok
  result[base + 2] = math.floor(math.max(0, capacity - (prev * weight + counted[k])))
  result[base + 3] = math.ceil(retry_us / 1000)
  result[base + 4] = math.ceil(reset_us / 1000)
end

result[1] = admitted
if admitted == 1 then
  local values = {}
  for k = 1, n do
    values[6 * k - 5] = fields[3 * k - 2]
    values[6 * k - 4] = indexes[k]
    values[6 * k - 3] = fields[3 * k - 1]
    values[6 * k - 2] = counted[k]
    values[6 * k - 1] = fields[3 * k]
    values[6 * k] = previous[k]
  end
  redis.call('HSET', KEYS[1], unpack(values))
  redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil(ttl_us / 1000)))
end
return result
