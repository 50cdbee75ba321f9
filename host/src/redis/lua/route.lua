-- Routes a batch of ingress entries in one step. For each entry still
-- pending (no other router routed it first): add its copies to the queue
-- streams and its dead letters, then XACK it, last, so that a write that
-- fails leaves the entry pending rather than acknowledged. A crash leaves
-- all of the batch done or none of it, and an entry two routers read is
-- routed once.
--
-- KEYS[1]: the ingress stream; KEYS[2]: the dead-letter stream; KEYS[3..]:
-- queue streams.
-- ARGV: group, entry count, then per entry: its id; the number of copies,
-- and each copy's KEYS index; the number of fields of a copy, and the
-- fields; the number of dead letters, and for each its number of host
-- fields and the host fields.
local err = check_streams(KEYS)
if err then
  return err
end
local group = ARGV[1]
local n = tonumber(ARGV[2])
local i = 3
local done = 0
for _ = 1, n do
  local id = ARGV[i]
  local nc = tonumber(ARGV[i + 1])
  i = i + 2
  local copies = {}
  for c = 1, nc do
    copies[c] = KEYS[tonumber(ARGV[i])]
    i = i + 1
  end
  local nf = tonumber(ARGV[i])
  i = i + 1
  local fields = {}
  for f = 1, nf do
    fields[f] = ARGV[i]
    i = i + 1
  end
  local nd = tonumber(ARGV[i])
  i = i + 1
  local dead = {}
  for d = 1, nd do
    local nh = tonumber(ARGV[i])
    i = i + 1
    local host = {}
    for h = 1, nh do
      host[h] = ARGV[i]
      i = i + 1
    end
    dead[d] = host
  end
  if #redis.call('XPENDING', KEYS[1], group, id, id, 1) == 1 then
    for c = 1, nc do
      redis.call('XADD', copies[c], '*', unpack(fields))
    end
    for d = 1, nd do
      dead_letter(KEYS[2], KEYS[1], id, dead[d])
    end
    redis.call('XACK', KEYS[1], group, id)
    done = done + 1
  end
end
return done
