-- Room for new clients to be counted per client in one hour: grants up to ARGV[1] of them
-- while the hour has counted fewer than its most. Clients the hour counts already have
-- their own hash for it and ask for no room.
--
-- KEYS[1]: how many clients the hour counts (<prefix>:usage-clients:<YYYY-MM-DD-HH>).
-- ARGV[1]: the new clients; ARGV[2]: the most clients the hour counts; ARGV[3]: the key's
-- time to live, in seconds.
--
-- Returns how many of the new clients are counted: the first ones, in the caller's order.
local counted = tonumber(redis.call('GET', KEYS[1]) or '0')
local granted = math.max(0, math.min(tonumber(ARGV[1]), tonumber(ARGV[2]) - counted))
if granted > 0 then
  redis.call('INCRBY', KEYS[1], granted)
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return granted
