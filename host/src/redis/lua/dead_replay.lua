-- Replays a dead letter: its original fields (the producer's, with the
-- renaming of lua/dead_letter.lua undone) are added to the stream it was
-- read from, with `switchyard-replayed-at`, and the dead letter is
-- deleted, in one step. A dead letter that is gone (replayed or deleted
-- already) is left alone: replaying twice adds one copy.
--
-- KEYS[1]: the dead-letter stream; KEYS[2]: the stream to add to, which
-- must be the record's `dead-source`. ARGV[1]: the dead letter's id;
-- ARGV[2]: the time, for `switchyard-replayed-at`.
-- Returns {'replayed', new id}, {'gone'} or {'refused', why}.
for i = 1, 2 do
  local t = redis.call('TYPE', KEYS[i]).ok
  if t ~= 'stream' and t ~= 'none' then
    return redis.error_reply('key ' .. KEYS[i] .. ' holds a ' .. t .. ', not a stream')
  end
end
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then
  return {'gone'}
end
local fields = found[1][2]
local source
local out = {}
for i = 1, #fields, 2 do
  local name, value = fields[i], fields[i + 1]
  if name == 'dead-source' then
    source = value
  elseif name == 'dead-original' then
    return {'refused', 'the original entry was not kept (' .. value .. ')'}
  elseif name == 'dead-fields' then
    return {'refused', 'the entry has more fields than a message may have'}
  elseif string.sub(name, 1, 5) ~= 'dead-' then
    if string.sub(name, 1, 5) == 'orig-' then
      name = string.sub(name, 6)
    end
    if name ~= 'switchyard-replayed-at' then
      out[#out + 1] = name
      out[#out + 1] = value
    end
  end
end
if source ~= KEYS[2] then
  return {'refused', 'it was read from ' .. tostring(source) .. ', not ' .. KEYS[2]}
end
if #out == 0 then
  return {'refused', 'it has no fields of its own'}
end
out[#out + 1] = 'switchyard-replayed-at'
out[#out + 1] = ARGV[2]
local id = redis.call('XADD', KEYS[2], '*', unpack(out))
redis.call('XDEL', KEYS[1], ARGV[1])
return {'replayed', id}
