-- wrk script: POST /openid with a fresh, never-repeated code on every request.
--
-- The mock WeChat spends each code once (a second exchange answers 40163 "code been used"), so
-- every request carries a unique code:
--
--     bench-<run>-<thread>-<n>
--
-- The mock reads that as user "bench" (the user is what comes before the first '-') with the
-- nonce "<run>-<thread>-<n>", so every request logs in the same user with a new code. Codes
-- must match [A-Za-z0-9_-] and must not contain '_' (that separates mock directives).
--   <run>    a random run id (BENCH_RUN_ID from the environment, else made up here), so two
--            runs against the same mock never collide;
--   <thread> the wrk thread number, given out in setup(), so threads never collide;
--   <n>      a per-thread counter.
--
-- At the end it prints one machine-readable line (and nothing else on stdout that starts with
-- RESULT):
--
--   RESULT requests=N duration_s=S rps=R p50_ms=.. p90_ms=.. p99_ms=.. max_ms=.. non2xx=N
--          errors=N connect=N read=N write=N timeout=N
--
-- non2xx counts responses whose status is not 200 (counted in response(), per thread);
-- errors counts socket-level failures (connect + read + write + timeout; wrk's own "status"
-- error count is left out because non2xx already covers it). Defining response() makes wrk
-- parse every response for Lua and costs it a little throughput; that is accepted here.

-- Global, not local: setup() overwrites it in each thread's state with the main state's value.
run_id = os.getenv("BENCH_RUN_ID")
if run_id == nil or not run_id:match("^[A-Za-z0-9]+$") then
    math.randomseed(os.time() + math.floor((os.clock() * 1e6) % 1e6))
    run_id = string.format("%x%x", os.time(), math.random(0, 0xfffffff))
end

local threads = {}
local next_tid = 0

-- Runs in wrk's main Lua state, once per thread, before the threads start.
function setup(thread)
    next_tid = next_tid + 1
    thread:set("tid", next_tid)
    thread:set("run_id", run_id)
    table.insert(threads, thread)
end

-- Everything below until done() runs in each thread's own Lua state.
local counter = 0
local prefix
local headers
non2xx = 0
statuses = ""   -- "code:count,..." of non-200 statuses, for the summary
sample = ""     -- the first non-200 body this thread saw, for diagnosis
local by_status = {}

function init(args)
    prefix = string.format("bench-%s-%d-", run_id, tid)
    headers = { ["Content-Type"] = "application/json" }
end

function request()
    counter = counter + 1
    local body = '{"code":"' .. prefix .. counter .. '"}'
    return wrk.format("POST", "/openid", headers, body)
end

function response(status, hdrs, body)
    if status ~= 200 then
        non2xx = non2xx + 1
        by_status[status] = (by_status[status] or 0) + 1
        local parts = {}
        for s, n in pairs(by_status) do
            parts[#parts + 1] = s .. ":" .. n
        end
        statuses = table.concat(parts, ",")
        if sample == "" and body ~= nil then
            sample = string.sub(body, 1, 300)
        end
    end
end

-- Back in the main state after the run.
function done(summary, latency, requests)
    local non = 0
    local merged = {}
    local samples = {}
    for _, t in ipairs(threads) do
        non = non + (tonumber(t:get("non2xx")) or 0)
        local st = t:get("statuses") or ""
        for s, n in string.gmatch(st, "(%d+):(%d+)") do
            merged[s] = (merged[s] or 0) + tonumber(n)
        end
        local sm = t:get("sample") or ""
        if sm ~= "" then
            samples[#samples + 1] = sm
        end
    end

    local e = summary.errors
    local errors = e.connect + e.read + e.write + e.timeout
    local secs = summary.duration / 1e6
    local rps = secs > 0 and summary.requests / secs or 0
    local function ms(us) return us / 1000 end

    if non > 0 then
        local parts = {}
        for s, n in pairs(merged) do parts[#parts + 1] = s .. "=" .. n end
        table.sort(parts)
        io.write("NON2XX statuses: ", table.concat(parts, " "), "\n")
        for _, sm in ipairs(samples) do
            io.write("NON2XX sample body: ", (sm:gsub("[\r\n]", " ")), "\n")
        end
    end

    io.write(string.format(
        "RESULT requests=%d duration_s=%.2f rps=%.1f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f " ..
        "max_ms=%.2f non2xx=%d errors=%d connect=%d read=%d write=%d timeout=%d\n",
        summary.requests, secs, rps,
        ms(latency:percentile(50)), ms(latency:percentile(90)), ms(latency:percentile(99)),
        ms(latency.max), non, errors, e.connect, e.read, e.write, e.timeout))
end
