-- A page of dead letters, newest first, summarised: each record's own
-- fields (dead-*) and its message type and id, every value cut to `max`
-- bytes, without the rest of the message (which may be large).
--
-- KEYS[1]: the dead-letter stream. ARGV: the newest id to include ('+',
-- or '(' .. id to start below an id), the oldest ('-' or an id), how
-- many, max bytes.
local newest, oldest, n, max = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
-- XREVRANGE with COUNT 0 answers nil, not an empty list.
if n <= 0 then
  return out
end
for _, e in ipairs(redis.call('XREVRANGE', KEYS[1], newest, oldest, 'COUNT', n)) do
  local kept = {}
  local fields = e[2]
  for i = 1, #fields, 2 do
    local name = fields[i]
    if string.sub(name, 1, 5) == 'dead-' or name == 'type' or name == 'id'
        or name == 'cap-msg-name' or name == 'cap-msg-id' then
      kept[#kept + 1] = name
      kept[#kept + 1] = string.sub(fields[i + 1], 1, max)
    end
  end
  out[#out + 1] = {e[1], kept}
end
return out
