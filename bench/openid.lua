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

threads = {} -- global: bench/report.lua reads it in done()
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
by_status = {} -- global: bench/report.lua counts into it

function init(args)
    prefix = string.format("bench-%s-%d-", run_id, tid)
    headers = { ["Content-Type"] = "application/json" }
end

function request()
    counter = counter + 1
    local body = '{"code":"' .. prefix .. counter .. '"}'
    return wrk.format("POST", "/openid", headers, body)
end

-- response() and done(): shared with the other scripts.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")
