-- tollgate token bucket: one atomic decision for one (rule, client) bucket.
--
-- KEYS[1]  the bucket: a hash with fields
--            tokens  tokens left after the last admitted request (float)
--            ts      when that was, in microseconds of Redis TIME
--          A missing key is a full bucket. The key expires when the bucket would be full
--          again, so idle clients cost nothing.
-- ARGV[1]  capacity: the most tokens the bucket holds (integer >= 1)
-- ARGV[2]  refill rate: tokens added per second (number > 0)
-- ARGV[3]  cost: tokens this request takes (integer >= 1)
--
-- Returns {allowed, remaining, retry_after_ms, reset_after_ms, now_ms}:
--   allowed         1 if the request may go on (its tokens are taken), 0 if not (nothing changes)
--   remaining       whole tokens left
--   retry_after_ms  when `cost` tokens will be there (0 when allowed)
--   reset_after_ms  when the bucket will be full again
--   now_ms          Redis TIME in milliseconds, the clock every app instance shares
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end

-- A clock that went backwards (failover to a node with another clock) refills nothing.
local elapsed = math.max(0, now - ts)
-- min() also clamps a bucket whose capacity was lowered.
tokens = math.min(capacity, tokens + elapsed * rate / 1000000)

local allowed = 0
local retry_after_us = 0
if tokens >= cost then
  allowed = 1
  tokens = tokens - cost
  local full_after_ms = math.ceil((capacity - tokens) * 1000 / rate)
  redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
  redis.call('PEXPIRE', KEYS[1], math.max(1, full_after_ms))
else
  retry_after_us = (cost - tokens) * 1000000 / rate
end

return {
  allowed,
  math.floor(tokens),
  math.ceil(retry_after_us / 1000),
  math.ceil((capacity - tokens) * 1000 / rate),
  math.floor(now / 1000),
}
