-- Removes a consumer from its group only if nothing is pending for it, in
-- one step. Returns what XGROUP DELCONSUMER returns, or -1 when the
-- consumer still holds messages.
--
-- KEYS[1]: the stream. ARGV: group, consumer.
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1
