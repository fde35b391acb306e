-- Writes back the entries an instance holds, into a Redis that lost them.
--
-- KEYS[1]: the hash of entries; KEYS[2]: their version. ARGV[1]: the version the caller
-- holds; ARGV[2]: the channel changes are announced on; then target, rule pairs.
--
-- Only if Redis is still behind the caller (an older version, or none of the entries at the
-- same version): another instance may have written its own back first. Entries Redis has
-- are kept (HSETNX); the version becomes the caller's plus one, and every instance is told
-- to read the entries again ({"version": N, "restored": count}).
--
-- Returns {entries written back, version}; {0, version} when Redis was not behind.
local version = tonumber(redis.call('GET', KEYS[2]) or '0')
local held = tonumber(ARGV[1])
if version > held or (version == held and redis.call('EXISTS', KEYS[1]) == 1) then
  return {0, version}
end
local restored = 0
for i = 3, #ARGV, 2 do
  restored = restored + redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
end
version = held + 1
redis.call('SET', KEYS[2], version)
redis.call('PUBLISH', ARGV[2], cjson.encode({version = version, restored = restored}))
return {restored, version}
