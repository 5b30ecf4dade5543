-- mailshare-route.lua: a Dovecot (2.3.19+ and 2.4) Lua passdb that asks mailshare where a user lives and
-- returns proxy fields, so Dovecot's own proxies (IMAP, POP3, LMTP, ManageSieve, submission)
-- send each user to the node mailshare assigned: the director's job, with mailshare's leases,
-- bounded-load placement, moves, drains and fencing behind it.
--
-- It runs after the passdb that checked the password (see proxy.conf: result_success =
-- continue-ok there, skip = unauthenticated here) and refuses to route anyone else. On a
-- timeout, a refused token or a 5xx it fails the login as temporary: never routes at random.
-- Settings are read from mailshare-route.conf beside this file (key = value lines):
--   url = http://10.0.0.21:7480/v1/route     the coordinator's HTTP listener (several: one per line of url)
--   token_file = /etc/dovecot/mailshare.token  a token with role proxy (mailshare token create --role proxy);
--                                              the auth process (user dovecot) reads it: mode 0640, group dovecot
--   timeout_msecs = 2000                       per coordinator
--   proxy_maybe = no                           yes: proxy_maybe=y (this server may be the node itself)

local settings = { urls = {}, timeout_msecs = 2000, proxy_maybe = false }
local token
local client

local function trim(s)
  return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

local function read_settings(path)
  local f, err = io.open(path, "r")
  if not f then
    error("mailshare-route: cannot read " .. path .. ": " .. tostring(err))
  end
  for line in f:lines() do
    local key, value = line:match("^%s*([%w_]+)%s*=%s*(.-)%s*$")
    if key == "url" then
      table.insert(settings.urls, value)
    elseif key == "token_file" then
      settings.token_file = value
    elseif key == "timeout_msecs" then
      settings.timeout_msecs = tonumber(value) or settings.timeout_msecs
    elseif key == "proxy_maybe" then
      settings.proxy_maybe = value == "yes"
    elseif key ~= nil then
      error("mailshare-route: " .. path .. ": unknown setting " .. key)
    end
  end
  f:close()
  if #settings.urls == 0 then error("mailshare-route: " .. path .. ": no url") end
  if not settings.token_file then error("mailshare-route: " .. path .. ": no token_file") end
  local t, terr = io.open(settings.token_file, "r")
  if not t then error("mailshare-route: cannot read " .. settings.token_file .. ": " .. tostring(terr)) end
  token = trim(t:read("*a"))
  t:close()
end

function script_init()
  local source = debug.getinfo(1, "S").source
  local dir = source:match("^@(.*/)") or "./"
  read_settings(dir .. "mailshare-route.conf")
  -- 2.3 names the client's settings so; 2.4 refuses those and takes its own (http_client_*).
  local ok, made = pcall(dovecot.http.client, {
    request_timeout_msecs = settings.timeout_msecs,
    connect_timeout_msecs = settings.timeout_msecs,
    max_attempts = 1,
    user_agent = "mailshare-route.lua",
  })
  client = ok and made or dovecot.http.client({
    request_timeout = settings.timeout_msecs .. " ms",
    connect_timeout = settings.timeout_msecs .. " ms",
    request_max_attempts = 1,
    user_agent = "mailshare-route.lua",
  })
  return 0
end

-- A JSON string of a login name: quotes and backslashes escaped; control characters are refused.
local function json_string(s)
  if s:find("[%c]") then return nil end
  return '"' .. s:gsub('[\\"]', "\\%0") .. '"'
end

-- The answer is mailshare's own flat JSON object: strings without quotes inside, numbers.
local function field(json, key)
  return json:match('"' .. key .. '":"([^"\\]*)"') or json:match('"' .. key .. '":(%d+)')
end

-- doveadm: its mail commands (doveadm -u USER, -A) go to the user's node when doveadm_port is set.
local PROTOCOLS = { imap = "imap", pop3 = "pop3", lmtp = "lmtp", sieve = "sieve", submission = "submission", doveadm = "doveadm" }

function auth_passdb_lookup(req)
  if not req.skip_password_check then
    return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE,
      "mailshare-route: the user was not authenticated by an earlier passdb (result_success = continue-ok there, skip = unauthenticated here)"
  end
  -- 2.3 calls it service, 2.4 protocol; likewise rip and remote_ip.
  local service = req.service or req.protocol
  local protocol = PROTOCOLS[service]
  if not protocol then
    return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE, "mailshare-route: no route for service " .. tostring(service)
  end
  local user = json_string(req.user)
  if not user then return dovecot.auth.PASSDB_RESULT_USER_UNKNOWN, "mailshare-route: bad user name" end
  local body = '{"user":' .. user .. ',"protocol":"' .. protocol .. '","assign":true,"client_ip":"' .. (req.rip or req.remote_ip or "") .. '"}'
  local last = "no coordinator answered"
  for _, url in ipairs(settings.urls) do
    local r = client:request({ url = url, method = "POST" })
    r:add_header("authorization", "Bearer " .. token)
    r:add_header("content-type", "application/json")
    r:set_payload(body)
    local resp = r:submit()
    local status = resp:status()
    local payload = resp:payload() or ""
    if status == 200 then
      local host, port, destuser = field(payload, "host"), field(payload, "port"), field(payload, "destuser")
      if not host or not port then
        return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE, "mailshare-route: malformed answer from " .. url
      end
      local fields = { nopassword = "y", host = host, port = port }
      if settings.proxy_maybe then fields.proxy_maybe = "y" else fields.proxy = "y" end
      if destuser and destuser ~= req.user then fields.destuser = destuser end
      return dovecot.auth.PASSDB_RESULT_OK, fields
    elseif status == 404 then
      -- No tenant has the domain (or the name is nobody's): as an unknown user, routed nowhere.
      return dovecot.auth.PASSDB_RESULT_USER_UNKNOWN, "mailshare-route: " .. (field(payload, "error") or "unknown user")
    elseif status == 400 or status == 401 or status == 403 then
      -- The request or the token is wrong: another coordinator would say the same.
      return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE, "mailshare-route: " .. url .. " refused: " .. status .. " " .. (field(payload, "error") or "")
    end
    -- 503 (no node may take the user now, a move in progress), 5xx, or no answer (Dovecot's
    -- http client reports those as 9000-and-up): the next coordinator, then a temporary failure.
    last = url .. ": " .. status .. " " .. (field(payload, "error") or resp:reason() or "")
  end
  return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE, "mailshare-route: " .. last
end
