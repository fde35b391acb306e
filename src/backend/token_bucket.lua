-- tollgate token bucket: one atomic decision over all bands of one (rule, client).
-- Mirrors src/algorithm.rs (token_bucket) operation for operation.
--
-- KEYS[1]  a hash; for band k the fields tokens/ts (k = 1) or tokens:k/ts:k (k > 1):
--            tokens  tokens left after the last admitted request (float)
--            ts      when that was, in microseconds of Redis TIME
--          A missing band is a full bucket. The key expires when every band is full again.
-- ARGV[1]  cost: tokens the request takes from every band (integer >= 1)
-- ARGV[2]  n: the number of bands
-- ARGV[1+2k], ARGV[2+2k]  band k: capacity (integer >= 1), refill rate (tokens per second)
--
-- Returns {admitted, now_ms, then for each band: admitted, remaining, retry_after_ms,
-- reset_after_ms}. The request is admitted (and every band charged) only if every band
-- admits it; otherwise nothing is written.
local cost = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

local fields = {}
for k = 1, n do
  local suffix = ''
  if k > 1 then suffix = ':' .. k end
  fields[2 * k - 1] = 'tokens' .. suffix
  fields[2 * k] = 'ts' .. suffix
end
local stored = redis.call('HMGET', KEYS[1], unpack(fields))

local admitted = 1
local result = {0, math.floor(now / 1000)}
local left = {}
local ttl_us = 0
for k = 1, n do
  local capacity = tonumber(ARGV[1 + 2 * k])
  local rate = tonumber(ARGV[2 + 2 * k])
  local tokens = tonumber(stored[2 * k - 1])
  local ts = tonumber(stored[2 * k])
  if tokens == nil or ts == nil then
    tokens = capacity
    ts = now
  end
  -- A clock that went backwards refills nothing; min() also clamps a lowered capacity.
  local elapsed = math.max(0, now - ts)
  tokens = math.min(capacity, tokens + elapsed * rate / 1000000)
  local ok = 0
  local retry_us = 0
  if tokens >= cost then
    ok = 1
    left[k] = tokens - cost
  else
    admitted = 0
    left[k] = tokens
    retry_us = (cost - tokens) * 1000000 / rate
  end
  local reset_us = (capacity - left[k]) * 1000000 / rate
  ttl_us = math.max(ttl_us, reset_us)
  local base = 2 + 4 * (k - 1)
  result[base + 1] = ok
  result[base + 2] = math.floor(left[k])
  result[base + 3] = math.ceil(retry_us / 1000)
  result[base + 4] = math.ceil(reset_us / 1000)
end

result[1] = admitted
if admitted == 1 then
  local values = {}
  for k = 1, n do
    values[4 * k - 3] = fields[2 * k - 1]
    values[4 * k - 2] = left[k]
    values[4 * k - 1] = fields[2 * k]
    values[4 * k] = now
  end
  redis.call('HSET', KEYS[1], unpack(values))
  redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil(ttl_us / 1000)))
end
return result
