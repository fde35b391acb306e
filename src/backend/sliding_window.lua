-- sliding_window (two-counter estimate): appended to prelude.lua. Mirrors src/algorithm.rs
-- operation for operation.
--
-- Band k's second parameter is its window length in µs. Fields per band:
--   win    the current window's index: floor(Redis TIME in µs / window)
--   count  units counted in that window
--   prev   units counted in the window before it
-- estimate = prev × (share of the current window still ahead) + count. The key expires
-- when both counted windows have passed.
local fields, stored = read_bands({'win', 'count', 'prev'})
local admitted = 1
local values = {}
local ttl_us = 0
for k = 1, n do
  local capacity = tonumber(ARGV[1 + 2 * k])
  local window = tonumber(ARGV[2 + 2 * k])
  local win = tonumber(stored[3 * k - 2])
  local index = window_index(window, win)
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
  local counted = current
  local retry_us = 0
  if estimate + cost <= capacity then
    ok = 1
    counted = current + cost
  else
    admitted = 0
    if current + cost <= capacity then
      -- The previous window's share must shrink to capacity - current - cost.
      local weight_needed = (capacity - current - cost) / prev
      retry_us = (start + (1 - weight_needed) * window) - now
    else
      -- Only the next window, where this one becomes the previous, can admit it.
      local weight_needed = (capacity - cost) / current
      retry_us = ((start + window) + (1 - weight_needed) * window) - now
    end
  end
  local reset_us = 0
  if counted > 0 then
    reset_us = (start + 2 * window) - now
  elseif prev > 0 then
    reset_us = (start + window) - now
  end
  ttl_us = math.max(ttl_us, reset_us)
  answer(k, ok, math.max(0, capacity - (prev * weight + counted)), retry_us, reset_us)
  values[3 * k - 2] = index
  values[3 * k - 1] = counted
  values[3 * k] = prev
end
return finish(admitted, fields, values, ttl_us)
