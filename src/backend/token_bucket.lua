-- token_bucket: appended to prelude.lua. Mirrors src/algorithm.rs operation for operation.
--
-- Band k's second parameter is its refill rate in tokens per second. Fields per band:
--   tokens  tokens left after the last admitted request (float)
--   ts      when that was, in microseconds of Redis TIME
-- A missing band is a full bucket; the key expires when every band is full again.
local fields, stored = read_bands({'tokens', 'ts'})
local admitted = 1
local values = {}
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
  local left = tokens
  local retry_us = 0
  if tokens >= cost then
    ok = 1
    left = tokens - cost
  else
    admitted = 0
    retry_us = (cost - tokens) * 1000000 / rate
  end
  local reset_us = (capacity - left) * 1000000 / rate
  ttl_us = math.max(ttl_us, reset_us)
  answer(k, ok, left, retry_us, reset_us)
  values[2 * k - 1] = left
  values[2 * k] = now
end
return finish(admitted, fields, values, ttl_us)
