-- Shared by the scripts that dead-letter: included after their header.

-- Fails (before anything is written) unless every key named is a stream or
-- absent: a write to a key of another type would fail half-way through a
-- script, and Redis does not undo what a script already did.
local function check_streams(keys)
  for i = 1, #keys do
    local t = redis.call('TYPE', keys[i]).ok
    if t ~= 'stream' and t ~= 'none' then
      return redis.error_reply('key ' .. keys[i] .. ' holds a ' .. t .. ', not a stream')
    end
  end
  return nil
end

-- Adds to `dead` the dead-letter record of entry `id` of `source`: the
-- host's fields (`host`, a flat list of names and values), then the entry's
-- own fields, copied here so the host never holds an oversized entry. A
-- field of the entry whose name starts with `dead-` (the host's namespace)
-- or `orig-` is kept as `orig-` + its name: the host's fields cannot be
-- forged, and the renaming can be undone. An entry with more fields than one
-- command from a script can carry is kept whole, as one JSON array of names
-- and values, in `dead-fields`.
local function dead_letter(dead, source, id, host)
  local args = {}
  for i = 1, #host do
    args[i] = host[i]
  end
  local found = redis.call('XRANGE', source, id, id)
  if #found == 0 then
    args[#args + 1] = 'dead-original'
    args[#args + 1] = 'missing: the entry was deleted from ' .. source
  else
    local fields = found[1][2]
    if #fields > MAX_FIELD_VALUES then
      args[#args + 1] = 'dead-fields'
      args[#args + 1] = cjson.encode(fields)
    else
      for i = 1, #fields, 2 do
        local name = fields[i]
        local p = string.sub(name, 1, 5)
        if p == 'dead-' or p == 'orig-' then
          name = 'orig-' .. name
        end
        args[#args + 1] = name
        args[#args + 1] = fields[i + 1]
      end
    end
  end
  return redis.call('XADD', dead, '*', unpack(args))
end
