-- Dead-letters one message of a queue: the record added (its fields copied
-- from the queue's stream), the entry acknowledged and its recorded failures
-- cleared, in one step. Returns the dead letter's id.
--
-- KEYS[1]: the queue stream; KEYS[2]: the dead-letter stream; KEYS[3]: the
-- queue's failures hash. ARGV: group, entry id, then the host fields.
local err = check_streams({KEYS[1], KEYS[2]})
if err then
  return err
end
local host = {}
for i = 3, #ARGV do
  host[i - 2] = ARGV[i]
end
local dead_id = dead_letter(KEYS[2], KEYS[1], ARGV[2], host)
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
return dead_id
