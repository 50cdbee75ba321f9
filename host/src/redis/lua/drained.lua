-- Whether nothing is left to read or in flight in a partition's streams,
-- looked at in one step: a handler acking its message and publishing a
-- follow-up to the partition's ingress cannot slip in between two looks.
-- A stream counts as drained when it is absent or empty, or when the group
-- has nothing pending and has read up to its newest entry.
--
-- KEYS: the partition's streams (they share its slot). ARGV[1]: the group.
-- Returns 1 when every one is drained, else 0.
local function id_parts(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms) or 0, tonumber(seq) or 0
end

local function after(a, b)
  local ams, aseq = id_parts(a)
  local bms, bseq = id_parts(b)
  return ams > bms or (ams == bms and aseq > bseq)
end

for _, key in ipairs(KEYS) do
  local t = redis.call('TYPE', key).ok
  if t == 'stream' and redis.call('XLEN', key) > 0 then
    local found = false
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
      local info = {}
      for i = 1, #g, 2 do
        info[g[i]] = g[i + 1]
      end
      if info['name'] == ARGV[1] then
        found = true
        if info['pending'] ~= 0 then
          return 0
        end
        local newest = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
        if newest[1] and after(newest[1][1], info['last-delivered-id']) then
          return 0
        end
      end
    end
    if not found then
      return 0
    end
  elseif t ~= 'stream' and t ~= 'none' then
    return 0
  end
end
return 1
