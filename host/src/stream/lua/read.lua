-- Reads entries through a consumer group without handing the host one that
-- is over the size bounds: for those it returns only their size. What the
-- host receives is bounded by count x max bytes, whatever producers add.
-- Entries are loaded a few at a time (one at first, more while they are
-- small), and reading stops once `budget` bytes were loaded, so one call
-- neither holds Redis long nor fills its memory with a backlog of large
-- entries.
--
-- KEYS[1]: the stream. ARGV: group, consumer, count, max bytes, max fields,
-- budget, then 'new' (entries never delivered), or 'claim', min idle ms,
-- cursor (entries pending longer than that, taken over: XAUTOCLAIM).
-- Returns {cursor, deleted ids, entries}; each entry is {id, deliveries,
-- fields} or, over a bound, {id, deliveries, bytes, field count}. The
-- cursor is '0-0' for 'new', and deliveries come from XPENDING for 'claim'.
local group, consumer = ARGV[1], ARGV[2]
local count, max_bytes, max_fields = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local budget, mode = tonumber(ARGV[6]), ARGV[7]
local CHUNK = 8
local chunk = 1
local cursor, deleted, out = '0-0', {}, {}
local loaded = 0

-- The next chunk: twice as many while the entries read are small.
local function grow(before, got)
  if got > 0 and (loaded - before) / got < budget / (4 * CHUNK) then
    chunk = math.min(chunk * 2, CHUNK)
  else
    chunk = 1
  end
end

local function take(e)
  local id, fields = e[1], e[2]
  if not fields then
    return
  end
  local deliveries = 1
  if mode == 'claim' then
    local p = redis.call('XPENDING', KEYS[1], group, id, id, 1)
    if p[1] then
      deliveries = p[1][4]
    end
  end
  local bytes = 0
  for f = 1, #fields do
    bytes = bytes + #fields[f]
  end
  loaded = loaded + bytes
  if bytes > max_bytes or #fields > 2 * max_fields then
    out[#out + 1] = {id, deliveries, bytes, #fields / 2}
  else
    out[#out + 1] = {id, deliveries, fields}
  end
end

if mode == 'new' then
  while #out < count and loaded < budget do
    local want = math.min(chunk, count - #out)
    local r = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', want, 'STREAMS', KEYS[1], '>')
    if not r then
      break
    end
    local got, before = r[1][2], loaded
    for _, e in ipairs(got) do
      take(e)
    end
    if #got < want then
      break
    end
    grow(before, #got)
  end
else
  -- Each XAUTOCLAIM scans at most ten times COUNT pending entries; a few
  -- calls per script keep one call short however long the pending list
  -- (messages waiting for a retry stay pending). The caller resumes from
  -- the cursor returned.
  cursor = ARGV[9]
  local calls = 0
  repeat
    calls = calls + 1
    local want = math.min(chunk, count - #out)
    local r = redis.call('XAUTOCLAIM', KEYS[1], group, consumer, ARGV[8], cursor, 'COUNT', want)
    local before = loaded
    cursor = r[1]
    for _, e in ipairs(r[2]) do
      take(e)
    end
    if #r[2] == 0 then
      -- Nothing due in that stretch: scan a wider one next.
      chunk = math.min(chunk * 2, CHUNK)
    else
      grow(before, #r[2])
    end
    for _, id in ipairs(r[3] or {}) do
      deleted[#deleted + 1] = id
    end
  until cursor == '0-0' or #out >= count or loaded >= budget or calls >= 8
end
return {cursor, deleted, out}
