-- One instance that listens to live events, or just stopped, answers the roll call.
--
-- KEYS[1]: the listeners (<prefix>:events:listeners), a sorted set of listener
-- identifiers, each scored with when it stops listening, in milliseconds of Redis' clock.
-- ARGV[1]: the caller's identifier; ARGV[2]: '1' if it listens, '0' if it stopped; ARGV[3]:
-- for how many milliseconds it listens unless it answers again.
--
-- Returns how many other instances listen. A listener that stopped answering is dropped
-- once its time is up; the set expires when the last listener's time is. (An instance
-- that neither listens nor just stopped reads the set's size alone, without this script.)
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[2] == '1' then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
else
    redis.call('ZREM', KEYS[1], ARGV[1])
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then
    redis.call('PEXPIREAT', KEYS[1], last[2])
end
local others = redis.call('ZCARD', KEYS[1])
if ARGV[2] == '1' then
    others = others - 1
end
return others
