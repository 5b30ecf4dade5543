-- mailshare-check.lua: a Dovecot (2.3.19+ and 2.4) Lua userdb for each backend, run after the real one
-- (see backend.conf). Before every login and every LMTP delivery this script
-- asks the node's own `mailshare agent` (its --check-listen) whether this node holds the user
-- under a lease it can prove, and fails the lookup as temporary when it does not:
-- a node that cannot prove its lease serves nobody, a user who moved away logs in elsewhere, and
-- an agent that is not running lets nobody in. With the agent's kicks (a moved user's sessions,
-- every session on lease loss, and its watchdog's when the agent itself dies) no user is served
-- by two backends at once.
--
-- Settings are read from mailshare-check.conf beside this file (key = value lines):
--   url = http://127.0.0.1:7482/v1/check   the local agent's login check (mailshare agent --check-listen)
--   timeout_msecs = 4000                   more than the agent's --check-wait (default 2 s)

local settings = { timeout_msecs = 4000 }
local client

function script_init()
  local source = debug.getinfo(1, "S").source
  local path = (source:match("^@(.*/)") or "./") .. "mailshare-check.conf"
  local f, err = io.open(path, "r")
  if not f then error("mailshare-check: cannot read " .. path .. ": " .. tostring(err)) end
  for line in f:lines() do
    local key, value = line:match("^%s*([%w_]+)%s*=%s*(.-)%s*$")
    if key == "url" then
      settings.url = value
    elseif key == "timeout_msecs" then
      settings.timeout_msecs = tonumber(value) or settings.timeout_msecs
    elseif key ~= nil then
      error("mailshare-check: " .. path .. ": unknown setting " .. key)
    end
  end
  f:close()
  if not settings.url then error("mailshare-check: " .. path .. ": no url") end
  -- 2.3 names the client's settings so; 2.4 refuses those and takes its own (http_client_*).
  local ok, made = pcall(dovecot.http.client, {
    request_timeout_msecs = settings.timeout_msecs,
    connect_timeout_msecs = settings.timeout_msecs,
    max_attempts = 1,
    user_agent = "mailshare-check.lua",
  })
  client = ok and made or dovecot.http.client({
    request_timeout = settings.timeout_msecs .. " ms",
    connect_timeout = settings.timeout_msecs .. " ms",
    request_max_attempts = 1,
    user_agent = "mailshare-check.lua",
  })
  return 0
end

-- Asks the agent about req.user: "ok", or "unknown" / "temporary" with the agent's reason.
local function check(req)
  if req.user:find("[%c\\\"]") then return "unknown", "bad user name" end
  local r = client:request({ url = settings.url, method = "POST" })
  r:add_header("content-type", "application/json")
  r:set_payload('{"user":"' .. req.user .. '"}')
  local resp = r:submit()
  local status = resp:status()
  local why = (resp:payload() or ""):match('"error":"([^"\\]*)"') or resp:reason() or ""
  if status == 200 then return "ok" end
  if status == 404 then return "unknown", why end
  -- 403 (another node's user), 503 (no provable lease, or the user is leaving), or no answer
  -- (the agent is down: Dovecot's http client reports 9000 and up): not now, maybe later.
  return "temporary", status .. " " .. why
end

-- Every login (IMAP, POP3, ManageSieve, submission) and every LMTP delivery looks the user up in
-- the userdbs after the password was checked.
function auth_userdb_lookup(req)
  local verdict, why = check(req)
  if verdict == "ok" then return dovecot.auth.USERDB_RESULT_OK, {} end
  if verdict == "unknown" then return dovecot.auth.USERDB_RESULT_USER_UNKNOWN, "mailshare-check: " .. why end
  return dovecot.auth.USERDB_RESULT_INTERNAL_FAILURE, "mailshare-check: " .. why
end
