-- POST batches of 20 view/purchase events for random users and items; counts 2xx answers.
local users, items = {}, {}
for line in io.lines(os.getenv("NEXTBUY_USERS_FILE")) do users[#users + 1] = line end
for line in io.lines(os.getenv("NEXTBUY_ITEMS_FILE")) do items[#items + 1] = line end
local batch = tonumber(os.getenv("NEXTBUY_BATCH") or "20")
local threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function() acked = 0 end
math.randomseed(7)
request = function()
  local parts = {}
  for i = 1, batch do
    local kind = (math.random() < 0.2) and "purchase" or "view"
    parts[i] = string.format('{"user_id":"%s","item_id":"%s","event_type":"%s"}',
      users[math.random(#users)], items[math.random(#items)], kind)
  end
  local body = '{"events":[' .. table.concat(parts, ",") .. ']}'
  return wrk.format("POST", "/v1/events", {["Content-Type"] = "application/json"}, body)
end
response = function(status) if status == 200 then acked = acked + 1 end end
done = function()
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("acked") end
  io.stderr:write("ACKED_REQUESTS " .. total .. "\n")
end
