-- One instance answers the roll call of the instances that listen to live events.
--
-- KEYS[1]: the listeners (<prefix>:events:listeners), a sorted set of listener
-- identifiers, each scored with when it stops listening, in milliseconds of Redis' clock.
-- ARGV[1]: the caller's identifier; ARGV[2]: '1' if it listens, '0' if not; ARGV[3]: for
-- how many milliseconds it listens unless it answers again.
--
-- Returns how many other instances listen. A listener that stopped answering is dropped
-- once its time is up; the set itself expires with its last listener.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local lasting = tonumber(ARGV[3])
if ARGV[2] == '1' then
    redis.call('ZADD', KEYS[1], now + lasting, ARGV[1])
    redis.call('PEXPIRE', KEYS[1], lasting)
    return redis.call('ZCARD', KEYS[1]) - 1
end
redis.call('ZREM', KEYS[1], ARGV[1])
return redis.call('ZCARD', KEYS[1])
