-- GET the home placement for users drawn from users.txt (one id per line), 10% unknown users
-- (NEXTBUY_UNKNOWN_SHARE overrides the share).
local users = {}
local unknown = tonumber(os.getenv("NEXTBUY_UNKNOWN_SHARE") or "0.1")
for line in io.lines(os.getenv("NEXTBUY_USERS_FILE")) do users[#users + 1] = line end
math.randomseed(42)
request = function()
  local user
  if math.random() < unknown then user = "new-" .. math.random(1000000) else user = users[math.random(#users)] end
  return wrk.format("GET", "/v1/users/" .. user .. "/recommendations?k=10&placement=home")
end
