-- Schedules a message's next attempt: keeps it pending for this consumer
-- with its idle clock set so that it becomes claimable after the delay, and
-- records its failures; but only while it is still pending for this
-- consumer (another host may have taken it over meanwhile).
-- Returns 1 when scheduled, 0 when the message was no longer this
-- consumer's.
--
-- KEYS[1]: the queue stream; KEYS[2]: the queue's failures hash.
-- ARGV: group, consumer, entry id, idle ms, failures record (JSON).
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if not p[1] or p[1][2] ~= ARGV[2] then
  return 0
end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[4], 'JUSTID')
redis.call('HSET', KEYS[2], ARGV[3], ARGV[5])
return 1
