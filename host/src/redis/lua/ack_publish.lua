-- Acknowledges handled messages of a queue and adds what their calls
-- published to the ingress stream, in one step: a message's follow-ups
-- enter the ingress only with its acknowledgement (an outbox). The ingress
-- key is checked to be a stream before anything is written; the
-- publications are added before the acknowledgements, so that a failure
-- leaves the messages pending (to be handled, and to publish, again)
-- rather than acknowledged without their follow-ups.
--
-- KEYS[1]: the queue stream; KEYS[2]: the queue's failures hash;
-- KEYS[3]: the ingress stream.
-- ARGV: group, the number of ids to acknowledge, the ids, the number of ids
-- whose failures to clear, those ids, the number of messages to publish,
-- then per message its number of fields and the fields.
local err = check_streams({KEYS[3]})
if err then
  return err
end
local group = ARGV[1]
local i = 2
local acks = {}
for a = 1, tonumber(ARGV[i]) do
  acks[a] = ARGV[i + a]
end
i = i + #acks + 1
local cleared = {}
for c = 1, tonumber(ARGV[i]) do
  cleared[c] = ARGV[i + c]
end
i = i + #cleared + 1
local published = tonumber(ARGV[i])
i = i + 1
for _ = 1, published do
  local n = tonumber(ARGV[i])
  local fields = {}
  for f = 1, n do
    fields[f] = ARGV[i + f]
  end
  i = i + n + 1
  redis.call('XADD', KEYS[3], '*', unpack(fields))
end
if #acks > 0 then
  redis.call('XACK', KEYS[1], group, unpack(acks))
end
if #cleared > 0 then
  redis.call('HDEL', KEYS[2], unpack(cleared))
end
return published
