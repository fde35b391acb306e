-- fixed_window: appended to prelude.lua. Mirrors src/algorithm.rs operation for operation.
--
-- Band k's second parameter is its window length in µs. Fields per band:
--   win    the window's index: floor(Redis TIME in µs / window)
--   count  units counted in that window
-- Windows align to Unix time; the key expires when the last counted window ends.
local fields, stored = read_bands({'win', 'count'})
local admitted = 1
local values = {}
local ttl_us = 0
for k = 1, n do
  local capacity = tonumber(ARGV[1 + 2 * k])
  local window = tonumber(ARGV[2 + 2 * k])
  local win = tonumber(stored[2 * k - 1])
  local index = window_index(window, win)
  local count = 0
  if win == index then count = tonumber(stored[2 * k]) or 0 end
  local ok = 0
  local counted = count
  local until_end = (index + 1) * window - now
  local retry_us = until_end
  if count + cost <= capacity then
    ok = 1
    retry_us = 0
    counted = count + cost
  else
    admitted = 0
  end
  local reset_us = 0
  if counted > 0 then reset_us = until_end end
  ttl_us = math.max(ttl_us, reset_us)
  answer(k, ok, math.max(0, capacity - counted), retry_us, reset_us)
  values[2 * k - 1] = index
  values[2 * k] = counted
end
return finish(admitted, fields, values, ttl_us)
