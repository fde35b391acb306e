-- tollgate's decision script. Decides one or more requests in one call; each request is
-- decided atomically over every band of its rule, and so is the whole call. It mirrors
-- src/algorithm.rs operation for operation, so both backends give the same answers.
--
-- KEYS[d]  request d's bucket: one string per (rule, client) holding every band's state
-- ARGV[d]  request d's limit, packed little-endian: the algorithm (a byte: 1 token_bucket,
--          2 fixed_window, 3 sliding_window), the cost (a double), n, the number of bands (a
--          byte), then per band its capacity and its second parameter (doubles; token_bucket:
--          refill rate per second, windows: window length in µs)
--
-- A bucket's value is one byte, the algorithm, then little-endian doubles, per band:
--   token_bucket    tokens left after the last admitted request, when that was (µs of TIME)
--   fixed_window    window index (floor(TIME in µs / window)), units counted in it
--   sliding_window  window index, units counted in it, units counted in the one before
-- A missing band (or a value of another algorithm or type) is a full bucket. The key is
-- written only if every band admits, and expires when every band is full again.
--
-- Returns {now_ms, then for each request and each of its bands: admitted, remaining,
-- retry_after_ms, reset_after_ms}. A request is admitted if all of its bands are.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local floor, ceil, max, min = math.floor, math.ceil, math.max, math.min
local byte, char, rep, format = string.byte, string.char, string.rep, string.format
local pack, unpack_struct = struct.pack, struct.unpack

-- The window holding `now`. A stored index one ahead means the clock went back a little,
-- and that window is kept; any other is of another window, or of another window length (a
-- reload changed the rule), and carries nothing over. Exact for integer times below 2^53.
local function window_index(window, stored)
  local index = floor(now / window)
  if index * window > now then index = index - 1 end
  if (index + 1) * window <= now then index = index + 1 end
  if stored == index + 1 then index = stored end
  return index
end

local reply = {floor(now / 1000)}
local r = 1
for d = 1, #KEYS do
  local key = KEYS[d]
  local spec = ARGV[d]
  local algorithm, cost, n, at = unpack_struct('<BdB', spec)
  local width = 2
  if algorithm == 3 then width = 3 end

  -- The stored bands, if the value is this algorithm's (a leftover of another type reads
  -- as missing and is overwritten).
  local stored = {}
  local raw = redis.pcall('GET', key)
  if type(raw) == 'string' and byte(raw, 1) == algorithm then
    local have = min(n, floor((#raw - 1) / (8 * width)))
    if have > 0 then
      stored = {unpack_struct('<' .. rep('d', have * width), raw, 2)}
      -- struct.unpack also returns the position after the last value: not a band's.
      stored[have * width + 1] = nil
    end
  end

  local admitted = 1
  local values = {}
  local ttl_us = 0
  for k = 1, n do
    local capacity, param
    capacity, param, at = unpack_struct('<dd', spec, at)
    local s = (k - 1) * width
    local ok = 0
    local remaining, retry_us, reset_us
    if algorithm == 1 then
      local rate = param
      local tokens = stored[s + 1]
      local ts = stored[s + 2]
      if tokens == nil or ts == nil then
        tokens = capacity
        ts = now
      end
      -- A clock that went backwards refills nothing; min() also clamps a lowered capacity.
      tokens = min(capacity, tokens + max(0, now - ts) * rate / 1000000)
      local left = tokens
      retry_us = 0
      if tokens >= cost then
        ok = 1
        left = tokens - cost
      else
        retry_us = (cost - tokens) * 1000000 / rate
      end
      reset_us = (capacity - left) * 1000000 / rate
      remaining = floor(left)
      values[s + 1] = left
      values[s + 2] = now
    elseif algorithm == 2 then
      local window = param
      local win = stored[s + 1]
      local index = window_index(window, win)
      local count = 0
      if win == index then count = stored[s + 2] or 0 end
      local counted = count
      local until_end = (index + 1) * window - now
      retry_us = until_end
      if count + cost <= capacity then
        ok = 1
        retry_us = 0
        counted = count + cost
      end
      reset_us = 0
      if counted > 0 then reset_us = until_end end
      remaining = max(0, capacity - counted)
      values[s + 1] = index
      values[s + 2] = counted
    else
      -- Two-counter estimate: prev × (share of the current window still ahead) + count.
      local window = param
      local win = stored[s + 1]
      local index = window_index(window, win)
      local current = 0
      local prev = 0
      if win == index then
        current = stored[s + 2] or 0
        prev = stored[s + 3] or 0
      elseif win == index - 1 then
        prev = stored[s + 2] or 0
      end
      local start = index * window
      local weight = ((start + window) - now) / window
      local counted = current
      retry_us = 0
      if prev * weight + current + cost <= capacity then
        ok = 1
        counted = current + cost
      elseif current + cost <= capacity then
        -- The previous window's share must shrink to capacity - current - cost.
        local weight_needed = (capacity - current - cost) / prev
        retry_us = (start + (1 - weight_needed) * window) - now
      else
        -- Only the next window, where this one becomes the previous, can admit it.
        local weight_needed = (capacity - cost) / current
        retry_us = ((start + window) + (1 - weight_needed) * window) - now
      end
      reset_us = 0
      if counted > 0 then
        reset_us = (start + 2 * window) - now
      elseif prev > 0 then
        reset_us = (start + window) - now
      end
      remaining = max(0, capacity - (prev * weight + counted))
      values[s + 1] = index
      values[s + 2] = counted
      values[s + 3] = prev
    end
    if ok == 0 then admitted = 0 end
    if reset_us > ttl_us then ttl_us = reset_us end
    reply[r + 1] = ok
    reply[r + 2] = floor(remaining)
    reply[r + 3] = ceil(retry_us / 1000)
    reply[r + 4] = ceil(reset_us / 1000)
    r = r + 4
  end
  if admitted == 1 then
    local value = char(algorithm) .. pack('<' .. rep('d', n * width), unpack(values))
    -- PX as an integer string: a Lua number would be formatted as a float.
    redis.call('SET', key, value, 'PX', format('%d', max(1, ceil(ttl_us / 1000))))
  end
end
return reply
