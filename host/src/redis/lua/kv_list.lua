-- A page of the keys of one bucket, in order, after a cursor (the last key
-- of the previous page), leaving out keys that expired.
--
-- KEYS[1]: index (zset: member -> expiry ms); KEYS[2]: members for listing.
-- ARGV: the bucket's member prefix (bucket and a NUL), cursor ('' for the
-- start), page size, now ms.
-- Returns {keys, next cursor or nil}.
local prefix, cursor, page, now = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local from = '[' .. prefix
if cursor ~= '' then
  from = '(' .. prefix .. cursor
end
local members = redis.call('ZRANGEBYLEX', KEYS[2], from, '[' .. prefix .. '\255', 'LIMIT', 0, page + 1)
local keys = {}
local more = false
for i, m in ipairs(members) do
  if i > page then
    more = true
    break
  end
  local expiry = redis.call('ZSCORE', KEYS[1], m)
  if expiry and (expiry == 'inf' or tonumber(expiry) > now) then
    keys[#keys + 1] = string.sub(m, #prefix + 1)
  end
end
local next = nil
if more then
  next = string.sub(members[page], #prefix + 1)
end
return {keys, next}
