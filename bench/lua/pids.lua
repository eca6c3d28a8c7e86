-- Count responses per worker pid (the x-pid response header) across threads.
local threads = {}
pids = {}

function setup(thread)
   table.insert(threads, thread)
end

function response(status, headers, body)
   local pid = headers["x-pid"] or headers["X-Pid"] or "none"
   pids[pid] = (pids[pid] or 0) + 1
end

function bench_extra()
   local total = {}
   for _, thread in ipairs(threads) do
      local counts = thread:get("pids")
      for pid, n in pairs(counts) do
         total[pid] = (total[pid] or 0) + n
      end
   end
   local parts = {}
   for pid, n in pairs(total) do
      table.insert(parts, string.format('"%s": %d', pid, n))
   end
   return '"pids": {' .. table.concat(parts, ", ") .. '}'
end
