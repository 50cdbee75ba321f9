-- Dead-letters one message of a queue: the record added (its fields copied
-- from the queue's stream), the entry acknowledged and its recorded failures
-- cleared, in one step; but only while the entry is still pending for this
-- consumer. A message another host took over (this one was cut off from
-- Redis for longer than the visibility timeout), or that this call already
-- settled (its reply was lost and it is sent again), is left alone.
-- Returns the dead letter's id, or nil when nothing was done.
--
-- KEYS[1]: the queue stream; KEYS[2]: the dead-letter stream; KEYS[3]: the
-- queue's failures hash. ARGV: group, consumer, entry id, then the host
-- fields.
local err = check_streams({KEYS[1], KEYS[2]})
if err then
  return err
end
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if not p[1] or p[1][2] ~= ARGV[2] then
  return nil
end
local host = {}
for i = 4, #ARGV do
  host[i - 3] = ARGV[i]
end
local dead_id = dead_letter(KEYS[2], KEYS[1], ARGV[3], host)
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('HDEL', KEYS[3], ARGV[3])
return dead_id
