-- The id of a stream's newest entry, without returning the entry (which a
-- producer may have made large). nil for an empty or missing stream.
--
-- KEYS[1]: the stream.
local e = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if e[1] then
  return e[1][1]
end
return nil
