-- Shared by every tollgate decision script; each script is this prelude followed by one
-- algorithm's body (see src/backend/redis.rs).
--
-- KEYS[1]  one hash per (rule, client) holding every band of the rule
-- ARGV[1]  cost: units the request takes from every band (integer >= 1)
-- ARGV[2]  n: the number of bands
-- ARGV[1+2k], ARGV[2+2k]  band k: capacity, then the algorithm's second parameter
--
-- Every script returns {admitted, now_ms, then for each band: admitted, remaining,
-- retry_after_ms, reset_after_ms}, and writes only if every band admits.
local cost = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

-- The hash fields of every band: band 1 uses `names` as they are, band k > 1 adds ':k'.
-- Returns the field names and their stored values, band after band.
local function read_bands(names)
  local fields = {}
  for k = 1, n do
    local suffix = ''
    if k > 1 then suffix = ':' .. k end
    for _, name in ipairs(names) do
      fields[#fields + 1] = name .. suffix
    end
  end
  return fields, redis.call('HMGET', KEYS[1], unpack(fields))
end

-- The window holding `now`, never before the stored one (a clock that went backwards stays
-- in the stored window). Exact for any integer times below 2^53.
local function window_index(window, stored)
  local index = math.floor(now / window)
  if index * window > now then index = index - 1 end
  if (index + 1) * window <= now then index = index + 1 end
  if stored ~= nil and stored > index then index = stored end
  return index
end

local result = {0, math.floor(now / 1000)}

-- Records band k's answer in the reply.
local function answer(k, ok, remaining, retry_us, reset_us)
  local base = 2 + 4 * (k - 1)
  result[base + 1] = ok
  result[base + 2] = math.floor(remaining)
  result[base + 3] = math.ceil(retry_us / 1000)
  result[base + 4] = math.ceil(reset_us / 1000)
end

-- Writes `values` (one per field) and lets the key expire after `ttl_us`, if every band
-- admitted; returns the reply.
local function finish(admitted, fields, values, ttl_us)
  result[1] = admitted
  if admitted == 1 then
    local pairs_ = {}
    for i, field in ipairs(fields) do
      pairs_[2 * i - 1] = field
      pairs_[2 * i] = values[i]
    end
    redis.call('HSET', KEYS[1], unpack(pairs_))
    redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil(ttl_us / 1000)))
  end
  return result
end

