-- One runtime entry changed, and the entries' version moved on, at once.
--
-- KEYS[1]: the hash of entries (<prefix>:runtime); KEYS[2]: their version
-- ({<prefix>:runtime}:version), in the same slot.
-- ARGV[1]: the target; ARGV[2]: its rule as JSON, or '' to remove it; ARGV[3]: the version
-- the caller holds; ARGV[4]: '1' if the caller holds entries; ARGV[5]: the most entries
-- kept; ARGV[6]: the channel changes are announced on.
--
-- Returns {status, number}:
--   'added', 'replaced' or 'removed', with the new version (the change is announced as
--     {"version": N, "target": T, "rule": R}, without "rule" for a removal);
--   'unchanged', with the version: a removal of an entry not stored;
--   'behind', with the version: Redis holds an older version than the caller, or none of
--     the entries the caller holds at the same version; it lost them (restarted empty):
--     nothing is written, the caller writes its entries back first;
--   'full', with the number of entries: a new entry over the most kept.
local version = tonumber(redis.call('GET', KEYS[2]) or '0')
local known = tonumber(ARGV[3])
if version < known
    or (version == known and ARGV[4] == '1' and redis.call('EXISTS', KEYS[1]) == 0) then
  return {'behind', version}
end
local status
if ARGV[2] == '' then
  if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
    return {'unchanged', version}
  end
  status = 'removed'
else
  local count = redis.call('HLEN', KEYS[1])
  local existed = redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1
  if not existed and count >= tonumber(ARGV[5]) then
    return {'full', count}
  end
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  status = existed and 'replaced' or 'added'
end
version = redis.call('INCR', KEYS[2])
local message = {version = version, target = ARGV[1]}
if ARGV[2] ~= '' then
  message.rule = ARGV[2]
end
redis.call('PUBLISH', ARGV[6], cjson.encode(message))
return {status, version}
