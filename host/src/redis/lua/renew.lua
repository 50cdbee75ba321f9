-- Renews the leases of messages this consumer is handling: for each entry
-- id still pending for this consumer, XCLAIM it to this consumer again with
-- JUSTID, which resets its idle time and leaves its delivery count alone.
-- An entry another consumer has taken meanwhile is left alone.
-- Returns how many were renewed.
--
-- KEYS[1]: the stream. ARGV: group, consumer, entry ids.
local renewed = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    renewed = renewed + 1
  end
end
return renewed
