-- Writes one key of a queue's key-value buckets, within the queue's quota:
-- set a value, increment an integer, or set a value only if the key still
-- holds what a compare-and-swap handle read. The queue's live keys are
-- indexed with their expiry time; keys that expired are forgotten (a few at
-- a time) before the quota is checked, so it counts only live keys.
--
-- KEYS[1]: index (zset: member -> expiry ms, +inf for none); KEYS[2]: the
-- same members, for listing in order (zset, score 0); KEYS[3]: value sizes
-- (hash: member -> bytes); KEYS[4]: the queue's bytes in use; KEYS[5]: the
-- value's key.
-- ARGV: op ('set', 'incr' or 'cas'), member, value (a delta for 'incr'),
-- ttl ms (0: none), max keys, max bytes, now ms, the prefix of value keys,
-- and for 'cas': '1' if the handle saw a value ('0' if none), that value.
-- Returns 'ok', or for 'incr' the new value (as text), or 'changed' when a 'cas'
-- found the key changed; a quota error is an error reply starting QUOTA.
local op, member, value = ARGV[1], ARGV[2], ARGV[3]
local ttl, max_keys, max_bytes, now = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])

for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 32)) do
  local size = redis.call('HGET', KEYS[3], m)
  if size then
    redis.call('DECRBY', KEYS[4], size)
    redis.call('HDEL', KEYS[3], m)
  end
  redis.call('ZREM', KEYS[1], m)
  redis.call('ZREM', KEYS[2], m)
  redis.call('DEL', ARGV[8] .. m)
end

if op == 'cas' then
  local current = redis.call('GET', KEYS[5])
  if ARGV[9] == '1' then
    if current ~= ARGV[10] then
      return 'changed'
    end
  elseif current then
    return 'changed'
  end
end

-- Only what changes is written: an overwrite of a key that keeps its size
-- costs a lookup of its size, the SET and its index entry.
local known = redis.call('HGET', KEYS[3], member)
local fresh = not known
if fresh and redis.call('ZCARD', KEYS[1]) + 1 > max_keys then
  return redis.error_reply('QUOTA the queue may hold at most ' .. max_keys .. ' keys')
end
local old = tonumber(known or '0')
local new_size = #value
if op == 'incr' then
  -- An integer takes at most 20 bytes; the exact size is recorded after.
  new_size = 20
end
if new_size > old then
  local bytes = tonumber(redis.call('GET', KEYS[4]) or '0') - old + new_size
  if bytes > max_bytes then
    return redis.error_reply('QUOTA the queue may hold at most ' .. max_bytes .. ' bytes of values')
  end
end

local result = 'ok'
if op == 'incr' then
  redis.call('INCRBY', KEYS[5], value)
  -- Returned as the stored text: INCRBY's reply reaches Lua as a double,
  -- which is exact only up to 2^53.
  result = redis.call('GET', KEYS[5])
  new_size = #result
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[5], ttl)
  else
    redis.call('PERSIST', KEYS[5])
  end
elseif ttl > 0 then
  redis.call('SET', KEYS[5], value, 'PX', ttl)
else
  redis.call('SET', KEYS[5], value)
end
-- The expiry is recorded on every write: a SET without ttl keeps the key
-- for good, whatever it had before.
if ttl > 0 then
  redis.call('ZADD', KEYS[1], now + ttl, member)
else
  redis.call('ZADD', KEYS[1], '+inf', member)
end
if fresh then
  redis.call('ZADD', KEYS[2], 0, member)
end
if fresh or new_size ~= old then
  redis.call('HSET', KEYS[3], member, new_size)
  redis.call('INCRBY', KEYS[4], new_size - old)
end
return result
