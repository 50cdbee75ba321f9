-- Takes over entries pending longer than a minimum idle time (XAUTOCLAIM)
-- without handing the host one that is over the size bounds: for those it
-- returns only their size. Entries are loaded a few at a time (one at
-- first, more while they are small); claiming stops once `budget` bytes
-- were loaded, after a few XAUTOCLAIM calls (each scans at most ten times
-- its COUNT pending entries), or at the end of the pending list, so one call
-- neither holds Redis long nor fills its memory, however long the pending
-- list. The caller resumes from the cursor returned.
--
-- KEYS[1]: the stream. ARGV: group, consumer, count, max bytes, max fields,
-- budget, min idle ms, cursor.
-- Returns {cursor, deleted ids, entries}; each entry is {id, deliveries,
-- fields} or, over a bound, {id, deliveries, bytes, field count}, its
-- deliveries as XPENDING counts them (the take-over included).
local group, consumer = ARGV[1], ARGV[2]
local count, max_bytes, max_fields = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local budget, min_idle, cursor = tonumber(ARGV[6]), ARGV[7], ARGV[8]
local CHUNK = 8
local chunk = 1
local deleted, out = {}, {}
local loaded = 0

local function take(e)
  local id, fields = e[1], e[2]
  if not fields then
    return
  end
  local deliveries = 1
  local p = redis.call('XPENDING', KEYS[1], group, id, id, 1)
  if p[1] then
    deliveries = p[1][4]
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

local calls = 0
repeat
  calls = calls + 1
  local want = math.min(chunk, count - #out)
  local r = redis.call('XAUTOCLAIM', KEYS[1], group, consumer, min_idle, cursor, 'COUNT', want)
  local before = loaded
  cursor = r[1]
  for _, e in ipairs(r[2]) do
    take(e)
  end
  for _, id in ipairs(r[3] or {}) do
    deleted[#deleted + 1] = id
  end
  if #r[2] == 0 or (loaded - before) / #r[2] < budget / (4 * CHUNK) then
    -- Nothing due in that stretch, or small entries: a wider one next.
    chunk = math.min(chunk * 2, CHUNK)
  else
    chunk = 1
  end
until cursor == '0-0' or #out >= count or loaded >= budget or calls >= 8
return {cursor, deleted, out}
