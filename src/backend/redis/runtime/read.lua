-- Every runtime entry and their version, read at once.
--
-- KEYS[1]: the hash of entries; KEYS[2]: their version.
-- Returns {version or false when there is none, {target, rule, ...}}.
return {redis.call('GET', KEYS[2]), redis.call('HGETALL', KEYS[1])}
