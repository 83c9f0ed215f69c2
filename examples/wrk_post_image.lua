-- wrk script: POST one image file as the raw request body, keep-alive.
--   WRK_BODY          image file to send (required)
--   WRK_CONTENT_TYPE  Content-Type header (default image/jpeg)
-- The path and query come from the URL given to wrk, e.g.
--   WRK_BODY=tests/fixtures/images/chelsea.jpg wrk -t1 -c1 -d10s --latency \
--     -s examples/wrk_post_image.lua 'http://127.0.0.1:8080/v1/tags?model=resnet18'
-- Summary lines: answers by status (a 503 storm cannot pass unnoticed), and the median of the
-- server's own time per request (decode + preprocess + inference from `timing_ms`): compared
-- with wrk's p50 at concurrency 1, the difference is what HTTP costs.
local path = assert(os.getenv("WRK_BODY"), "set WRK_BODY to an image file")
local f = assert(io.open(path, "rb"))
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = os.getenv("WRK_CONTENT_TYPE") or "image/jpeg"

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   statuses = {}
   server_ms = {}
end

local stage = '"decode":([%d%.eE+-]+),"preprocess":([%d%.eE+-]+),"inference":([%d%.eE+-]+)'

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
   local d, p, i = string.match(body or "", stage)
   if d then
      server_ms[#server_ms + 1] = tonumber(d) + tonumber(p) + tonumber(i)
   end
end

function done(summary, latency, requests)
   local total = {}
   local times = {}
   for _, thread in ipairs(threads) do
      local s = thread:get("statuses")
      for status, n in pairs(s) do
         total[status] = (total[status] or 0) + n
      end
      for _, t in ipairs(thread:get("server_ms")) do
         times[#times + 1] = t
      end
   end
   if #times > 0 then
      table.sort(times)
      io.write(string.format("server-side median: %.2f ms\n", times[math.ceil(#times / 2)]))
   end
   local parts = {}
   for status, n in pairs(total) do
      table.insert(parts, status .. "=" .. n)
   end
   table.sort(parts)
   io.write("statuses: " .. table.concat(parts, " ") .. "\n")
end
