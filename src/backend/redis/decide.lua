-- tollgate's decision script. Decides one or more requests in one call; each request is
-- decided atomically over every band of its rule, and so is the whole call. It mirrors
-- src/algorithm.rs operation for operation, so both backends give the same answers.
--
-- KEYS[d]  request d's bucket: one string per (rule, client) holding every band's state;
--          after the buckets, the reservations' keys the requests name
-- ARGV[d]  request d's limit, packed little-endian: the algorithm (a byte: 1 token_bucket,
--          2 fixed_window, 3 sliding_window), the flags (a byte: 1 peek, 2 settle, 4
--          reserve), the cost, the lease asked for (units) and its lifetime (µs), the
--          request's deadline (µs of TIME; 0: none), the index in KEYS of its reservation's
--          key (0: none) and the reservation's lifetime (µs) (doubles), n, the number of
--          bands (a byte), then per band its capacity and its second parameter (doubles;
--          token_bucket: refill rate per second, windows: window length in µs)
--
-- A reservation (flag 4) decides as a request does, asks no lease, and when admitted
-- stores `<cost>:<µs of TIME>` under its key (a string) for its lifetime. A settlement
-- (flag 2) reads that key: none there, its lease_units reply is -2 (unknown, or expired at
-- its estimate); `s`, -3 (settled already); an estimate, the request's cost (the units
-- used) less the estimate is taken from every band whether or not it fits (negative: given
-- back, by a window only to the window the estimate was counted in), the key becomes `s`
-- for the rest of its lifetime, and lease_units is the estimate.
--
-- A bucket's value is one byte, the algorithm, then little-endian doubles, per band:
--   token_bucket    tokens left after the last admitted request, when that was (µs of TIME)
--   fixed_window    window index (floor(TIME in µs / window)), units counted in it
--   sliding_window  window index, units counted in it, units counted in the one before
-- A missing band (or a value of another algorithm or type) is a full bucket. The key is
-- written only if every band admits, and expires when every band is full again. A bucket's
-- tokens may be below zero, and a window's count stored negative: a debt (from a
-- settlement), of which what passes the capacity is carried into the windows after it, a
-- capacity paid back by each (as src/algorithm.rs).
--
-- An admitted request may also take a lease: up to the units asked for beyond its cost, in
-- whole multiples of the cost, as long as every band still admits cost + lease. The lease
-- is taken from the bands like the cost (the answer reports the bands as if only the cost
-- had been), and lives for the lifetime asked for, cut short at the end of the current
-- window for the window algorithms. A lease of 0 asked for changes nothing.
--
-- A peek decides as a request would, but writes nothing and takes no lease; its bands'
-- remaining and reset are as they are now, before any cost.
--
-- A request whose deadline has passed when the script runs (Redis was stopped or busy, and
-- the app has answered it without Redis) is not decided and writes nothing: its lease_units
-- is -1 and its band fields are 0.
--
-- Returns one string of little-endian doubles (each an integer): now_ms, then for each
-- request lease_units, lease_ms, then for each of its bands admitted, remaining,
-- retry_after_ms, reset_after_ms, next_unit_ms (until the band has one whole unit more than
-- remaining; 0 when it is full). A request is admitted if all of its bands are. One string
-- rather than an array of integers: Redis writes it, and the app reads it, at once.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local floor, ceil, max, min = math.floor, math.ceil, math.max, math.min
local byte, rep, format = string.byte, string.rep, string.format
local pack, unpack_struct = struct.pack, struct.unpack

-- A time for the reply, which holds integers only: a request no band can ever admit (its
-- cost over a band's capacity, which the app does not send) waits forever, read as 2^53 ms.
local BIG = 2 ^ 53
local function whole(ms)
  if ms ~= ms then return 0 end
  return max(-BIG, min(BIG, ms))
end

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

-- What a window's `count` leaves owed `windows` windows later: what went past the
-- capacity (from a settlement), less a capacity for each window since.
local function carried(count, capacity, windows)
  return max(0, count - capacity * windows)
end

-- A window's count as stored: negative while it holds a debt past the capacity (from a
-- settlement), which the windows after it carry; a count past the capacity for another
-- reason (the capacity was lowered) carries nothing.
local function count_to_store(counted, owing, capacity)
  if owing and counted > capacity then return -counted end
  return counted
end

-- Until the start of the first window whose carried count is at most `room` short of the
-- capacity: the next window's, unless a debt runs past it.
local function until_room(until_end, window, counted, room, capacity, owing)
  local windows = 1
  if owing then windows = max(1, ceil((counted + room - capacity) / capacity)) end
  return until_end + (windows - 1) * window
end

-- One band's answer to taking `take` units: ok (1 or 0), remaining, retry_us, reset_us,
-- next_us (until one whole unit more than remaining), spare (units left beyond `take`),
-- until_end (µs to the end of the window; nil for the token bucket), then the band's values
-- after taking them. `forced`: a settlement of a reservation made at `since` (µs of TIME),
-- which takes whatever `take` is; a window gives a refund back only to the window the
-- estimate was counted in.
local function band(algorithm, capacity, param, stored, s, cost, take, forced, since)
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
    local ok, retry_us = 0, 0
    if forced or tokens >= take then
      ok = 1
      -- Below zero is a debt the refill pays back; a refund fills up to the capacity.
      left = min(capacity, tokens - take)
    else
      retry_us = (cost - tokens) * 1000000 / rate
    end
    local reset_us = (capacity - left) * 1000000 / rate
    -- The next whole token (the last one may be a fraction of one, up to the capacity);
    -- under a debt (tokens below zero, from a settlement), the first whole one.
    local next_us = 0
    if left < capacity then
      next_us = (min(capacity, floor(max(0, left)) + 1) - left) * 1000000 / rate
    end
    return ok, floor(left), retry_us, reset_us, next_us, tokens - take, nil, left, now
  elseif algorithm == 2 then
    local window = param
    local win = stored[s + 1]
    local index = window_index(window, win)
    local count, owing = 0, false
    local held = stored[s + 2] or 0
    if win == index then
      count, owing = math.abs(held), held < 0
    elseif win ~= nil and win < index and held < 0 then
      -- An earlier window: only a debt comes over.
      count, owing = carried(-held, capacity, index - win), true
    end
    -- A refund after the estimate's window ended: that window's count is gone already.
    if forced and take < 0 and floor(since / window) ~= index then take = 0 end
    local counted = count
    local until_end = (index + 1) * window - now
    local ok, retry_us = 0, 0
    if forced or count + take <= capacity then
      ok = 1
      counted = max(0, count + take)
    end
    owing = (owing or forced) and counted > capacity
    if ok == 0 then retry_us = until_room(until_end, window, counted, cost, capacity, owing) end
    local reset_us, next_us = 0, 0
    if counted > 0 then
      reset_us = until_room(until_end, window, counted, capacity, capacity, owing)
      next_us = until_room(until_end, window, counted, 1, capacity, owing)
    end
    -- Everything counted comes back at once, at the window's end (a debt, a capacity at
    -- each window's end).
    return ok, max(0, capacity - counted), retry_us, reset_us, next_us,
      capacity - count - take, until_end, index, count_to_store(counted, owing, capacity)
  else
    -- Two-counter estimate: prev × (share of the current window still ahead) + count.
    local window = param
    local win = stored[s + 1]
    local index = window_index(window, win)
    local current, prev, owing = 0, 0, false
    local held = stored[s + 2] or 0
    if win == index then
      current, owing = math.abs(held), held < 0
      prev = stored[s + 3] or 0
    elseif win ~= nil and win < index and held < 0 then
      -- Earlier windows, after a debt: the last one counted becomes the previous, as much
      -- of it as a window holds, and only the debt comes into this one.
      prev = min(capacity, carried(-held, capacity, index - win - 1))
      current = carried(-held, capacity, index - win)
      owing = true
    elseif win == index - 1 then
      prev = held
    end
    -- A refund goes to the window the estimate was counted in: this one, or the previous
    -- one (whose share of the estimate shrinks); an older one is gone already.
    if forced and take < 0 then
      local behind = index - floor(since / window)
      if behind == 1 then prev = max(0, prev + take) end
      if behind ~= 0 then take = 0 end
    end
    local start = index * window
    local weight = ((start + window) - now) / window
    local counted = current
    local ok, retry_us = 0, 0
    if forced or prev * weight + current + take <= capacity then
      ok = 1
      counted = max(0, current + take)
    end
    owing = (owing or forced) and counted > capacity
    if ok == 1 then
      retry_us = 0
    elseif current + cost <= capacity then
      -- The previous window's share must shrink to capacity - current - cost.
      local weight_needed = (capacity - current - cost) / prev
      retry_us = (start + (1 - weight_needed) * window) - now
    else
      -- Only a later window can admit it: the next, where this one becomes the previous,
      -- unless a debt runs past it. In the first window where what comes over leaves room
      -- for the cost, the previous window's share must shrink.
      local windows = 1
      if owing then windows = max(1, ceil((current + cost - capacity) / capacity)) end
      local carried_in = carried(current, capacity, windows)
      local before = min(capacity, carried(current, capacity, windows - 1))
      local weight_needed = (capacity - carried_in - cost) / before
      retry_us = (start + (windows + 1 - weight_needed) * window) - now
    end
    local reset_us = 0
    if counted > 0 then
      -- Every count gone: this window's becomes the previous, a debt runs on.
      local windows = 2
      if owing then windows = max(1, ceil(counted / capacity)) + 1 end
      reset_us = (start + windows * window) - now
    elseif prev > 0 then
      reset_us = (start + window) - now
    end
    local estimate = prev * weight + counted
    local remaining = max(0, capacity - estimate)
    -- Until the estimate has dropped enough for one more whole unit: the previous window's
    -- share shrinks until this window ends, then this window's count, become the previous,
    -- shrinks in turn (as src/algorithm.rs's sliding_next_unit_us).
    local next_us = 0
    if estimate > 0 then
      local free = capacity - estimate
      local drop = min(estimate, (floor(max(0, free)) + 1) - free)
      local before_end = prev * weight
      if prev > 0 and before_end >= drop then
        next_us = drop * window / prev
      elseif counted <= 0 then
        next_us = weight * window
      else
        next_us = weight * window + min(window, max(0, drop - before_end) * window / counted)
      end
    end
    return ok, remaining, retry_us, reset_us, next_us,
      capacity - (prev * weight + current) - take, (start + window) - now, index,
      count_to_store(counted, owing, capacity), prev
  end
end

local reply = {floor(now / 1000)}
local r = 1
-- Scratch tables, reused by every request in the call.
local STRIDE = 8
local answers, with_lease, values, stored = {}, {}, {}, {}
-- struct formats of k doubles (under k), and of a byte then k doubles (under -k), made once
-- per call.
local formats = {}
local function format_of(k)
  local f = formats[k]
  if f == nil then
    if k < 0 then f = '<B' .. rep('d', -k) else f = '<' .. rep('d', k) end
    formats[k] = f
  end
  return f
end
-- Every bucket in one MGET (a key of another type reads as nil); a key the call has written
-- already is read from `written`, so that a request sees the one before it in the call.
local got = redis.call('MGET', unpack(KEYS, 1, #ARGV))
local written = {}
for d = 1, #ARGV do
  local key = KEYS[d]
  local spec = ARGV[d]
  local algorithm, flags, cost, lease, lease_us, deadline, record, record_us, n, at =
    unpack_struct('<BBddddddB', spec)
  local peek = flags % 2 == 1
  local settle = flags % 4 >= 2
  local reserve = flags % 8 >= 4
  -- A reservation's key follows every bucket's: one in their place would be overwritten.
  if (settle or reserve) and not (record > #ARGV and record <= #KEYS) then
    return redis.error_reply('tollgate: a reservation key must follow the buckets')
  end
  local held = nil
  if settle then held = redis.call('GET', KEYS[record]) end
  if settle and (not held or held == 's') then
    -- Nothing to settle: unknown (or expired), or settled already.
    reply[r + 1] = (held == 's') and -3 or -2
    reply[r + 2] = 0
    r = r + 2
    for _ = 1, 5 * n do
      r = r + 1
      reply[r] = 0
    end
  elseif deadline > 0 and now > deadline then
    reply[r + 1] = -1
    reply[r + 2] = 0
    r = r + 2
    for _ = 1, 5 * n do
      r = r + 1
      reply[r] = 0
    end
  else
    local width = 2
    if algorithm == 3 then width = 3 end

    -- The stored bands, if the value is this algorithm's (a leftover of another type reads
    -- as missing and is overwritten).
    local have = 0
    local raw = written[key]
    if raw == nil then raw = got[d] end
    if type(raw) == 'string' and byte(raw, 1) == algorithm then
      have = min(n, floor((#raw - 1) / (8 * width)))
      if have == 1 and width == 2 then
        stored[1], stored[2] = unpack_struct('<dd', raw, 2)
      elseif have > 0 then
        local values_read = {unpack_struct(format_of(have * width), raw, 2)}
        for i = 1, have * width do stored[i] = values_read[i] end
      end
    end
    -- Past what was read, the scratch table holds nothing: those bands are full.
    for i = have * width + 1, n * width do stored[i] = nil end

    -- What a settlement takes: the units used less the estimate (negative: given back).
    local estimate = 0
    local take = cost
    local since = now
    if settle then
      -- `<estimate>:<µs of TIME when it was made>`; a bare estimate from an instance of
      -- the version before (made now, as far as its window is concerned).
      local units, made = string.match(held, '^(%d+):(%d+)$')
      estimate = tonumber(units or held) or 0
      since = tonumber(made) or now
      take = cost - estimate
    end

    -- The request's own answer, band by band, into `answers` (STRIDE values per band).
    local admitted = 1
    local spare = nil
    local bands_at = at
    for k = 1, n do
      local b = (k - 1) * STRIDE
      local capacity, param
      capacity, param, at = unpack_struct('<dd', spec, at)
      local ok, remaining, retry_us, reset_us, next_us, left, until_end, v1, v2, v3 =
        band(algorithm, capacity, param, stored, (k - 1) * width, take, take, settle, since)
      answers[b + 1], answers[b + 2], answers[b + 3], answers[b + 4] = ok, remaining, retry_us, reset_us
      answers[b + 8] = next_us
      if peek then
        local _, now_remaining, _, now_reset, now_next =
          band(algorithm, capacity, param, stored, (k - 1) * width, cost, 0, false)
        answers[b + 2], answers[b + 4], answers[b + 8] = now_remaining, now_reset, now_next
      end
      answers[b + 5], answers[b + 6], answers[b + 7] = v1, v2, v3
      if ok == 0 then admitted = 0 end
      if spare == nil or left < spare then spare = left end
      if until_end ~= nil and until_end < lease_us then lease_us = until_end end
    end

    -- A lease: whole multiples of the cost that every band can still give. `taken` holds
    -- the bands' values and reset after taking cost + lease.
    local extra = 0
    local taken = answers
    -- A lease of under 1 ms (the window ends sooner) is not granted: its reply would read 0.
    if admitted == 1 and not peek and not settle and not reserve and lease > 0
        and lease_us >= 1000 and cost > 0 then
      extra = max(0, floor(min(lease, spare) / cost) * cost)
      if extra > 0 then
        taken = with_lease
        at = bands_at
        for k = 1, n do
          local b = (k - 1) * STRIDE
          local capacity, param
          capacity, param, at = unpack_struct('<dd', spec, at)
          local ok, _, _, reset_us, _, _, _, v1, v2, v3 =
            band(algorithm, capacity, param, stored, (k - 1) * width, cost, cost + extra, false)
          if ok == 0 then extra = 0; taken = answers; break end
          taken[b + 4], taken[b + 5], taken[b + 6], taken[b + 7] = reset_us, v1, v2, v3
        end
      end
    end
    if extra == 0 then lease_us = 0 end
    if settle then extra = estimate end
    reply[r + 1] = extra
    reply[r + 2] = floor(lease_us / 1000)
    r = r + 2

    local ttl_us = 0
    for k = 1, n do
      local b = (k - 1) * STRIDE
      for i = 1, width do values[(k - 1) * width + i] = taken[b + 4 + i] end
      if taken[b + 4] > ttl_us then ttl_us = taken[b + 4] end
      reply[r + 1] = answers[b + 1]
      reply[r + 2] = whole(floor(answers[b + 2]))
      reply[r + 3] = whole(ceil(answers[b + 3] / 1000))
      reply[r + 4] = whole(ceil(answers[b + 4] / 1000))
      reply[r + 5] = whole(ceil(answers[b + 8] / 1000))
      r = r + 5
    end
    if admitted == 1 and not peek then
      local value = pack(format_of(-n * width), algorithm, unpack(values, 1, n * width))
      -- PX as an integer string: a Lua number would be formatted as a float.
      redis.call('SET', key, value, 'PX', format('%d', max(1, ceil(ttl_us / 1000))))
      written[key] = value
      if reserve and record > 0 then
        redis.call('SET', KEYS[record], format('%d:%d', cost, now), 'PX',
          format('%d', max(1, ceil(record_us / 1000))))
      elseif settle then
        redis.call('SET', KEYS[record], 's', 'KEEPTTL')
      end
    end
  end
end
-- Packed 64 values at a time, so that no call of struct.pack nears Lua's stack limit.
if #reply <= 64 then
  return pack(format_of(#reply), unpack(reply))
end
local parts = {}
for i = 1, #reply, 64 do
  local last = min(#reply, i + 63)
  parts[#parts + 1] = pack(format_of(last - i + 1), unpack(reply, i, last))
end
return table.concat(parts)
