'use strict'
// Behaviour 4: the library follows wxlogin's `action` (relogin, retry, none), once.

const { test } = require('node:test')
const assert = require('node:assert/strict')

const { createWxLogin, WxLoginError } = require('..')
const { APPID, call, fakeWx, newCode, newUser, realSetTimeout, requestsTo, startStack, T, useStack } = require('./helpers')

let stack
const auth = useStack((s) => (stack = s))

function rejection(p) {
  return p.then(
    (v) => assert.fail(`resolved ${JSON.stringify(v)}`),
    (e) => e,
  )
}

// Runs fn with the global setTimeout compressing waits of 30 s or more to nothing, and returns
// the delays it was asked for: WeChat's 45011 asks for 60 s, longer than a test may take. The
// library's guards (timeout + 2 s, 12 s here), the wx.request fake and node's sockets keep
// real time.
async function withCompressedWaits(fn) {
  const asked = []
  globalThis.setTimeout = (cb, ms, ...args) => {
    if (ms >= 30000) {
      asked.push(ms)
      ms = 0
    }
    return realSetTimeout(cb, ms, ...args)
  }
  try {
    return { result: await fn(), asked }
  } finally {
    globalThis.setTimeout = realSetTimeout
  }
}

test('none: user_blocked (WeChat 40226) is surfaced with its fields, not retried', T, async () => {
  const user = newUser()
  const wx = fakeWx({ user, codes: () => newCode(user, ['err40226']) })
  const a = auth(wx)
  const before = await stack.mockStats()
  const e = await rejection(a.request({ url: '/v1/session' }))
  const after = await stack.mockStats()
  assert.ok(e instanceof WxLoginError)
  assert.equal(e.statusCode, 403)
  assert.equal(e.error, 'user_blocked')
  assert.equal(e.action, 'none')
  assert.equal(e.wxErrcode, 40226)
  assert.match(e.message, /blocked/)
  assert.equal(wx.calls.login, 1, 'no second wx.login')
  assert.equal(requestsTo(wx, '/v1/login').length, 1, 'no second /v1/login')
  assert.equal(requestsTo(wx, '/v1/session').length, 0)
  assert.equal(after.requests - before.requests, 1, 'WeChat asked once')
  assert.equal(a.session, null)
})

test('retry: WeChat 45011 is retried with the same code after Retry-After (60 s)', T, async () => {
  const user = newUser()
  // err45011x1: the first exchange of the code is rate limited, the next one succeeds
  const wx = fakeWx({ user, codes: () => newCode(user, ['err45011x1']) })
  const a = auth(wx)
  const before = await stack.mockStats()
  const { result: s, asked } = await withCompressedWaits(() => a.login())
  const after = await stack.mockStats()
  const logins = requestsTo(wx, '/v1/login')
  assert.equal(logins.length, 2)
  assert.equal(logins[0].status, 429)
  assert.equal(logins[0].responseHeaders['Retry-After'], '60')
  assert.equal(logins[1].status, 200)
  assert.equal(logins[0].body, logins[1].body, 'the same code, sent again')
  assert.deepEqual(asked, [60000], 'waited what Retry-After said, once')
  assert.equal(wx.calls.login, 1, 'no new wx.login for a retry')
  assert.equal(after.requests - before.requests, 2)
  assert.equal(after.exchanges - before.exchanges, 1)
  assert.match(s.token, /^wxl_/)
})

test('retry: a second 45011 rejects (one retry only)', T, async () => {
  const user = newUser()
  const wx = fakeWx({ user, codes: () => newCode(user, ['err45011']) })
  const a = auth(wx)
  const { result: e, asked } = await withCompressedWaits(() => rejection(a.login()))
  assert.equal(e.statusCode, 429)
  assert.equal(e.error, 'rate_limited')
  assert.equal(e.action, 'retry')
  assert.equal(e.wxErrcode, 45011)
  assert.equal(e.retryAfter, 60)
  assert.deepEqual(asked, [60000])
  assert.equal(requestsTo(wx, '/v1/login').length, 2)
  assert.equal(wx.calls.login, 1)
})

test('retry: a Retry-After past maxRetryAfter rejects at once instead of retrying early', T, async () => {
  const user = newUser()
  const wx = fakeWx({ user, codes: () => newCode(user, ['err45011x1']) })
  const a = auth(wx, { maxRetryAfter: 30 })
  const t0 = Date.now()
  const e = await rejection(a.login())
  assert.ok(Date.now() - t0 < 5000)
  assert.equal(e.error, 'rate_limited')
  assert.equal(e.retryAfter, 60)
  assert.equal(requestsTo(wx, '/v1/login').length, 1)
})

test('retry: wxlogin\'s own rate limit, really waited out (Retry-After: 1 to 3 s)', T, async (t) => {
  const limited = await startStack({ env: { WXLOGIN_RATE_LIMIT_ADDRESS: '1/3s' } })
  t.after(() => limited.stop())
  const first = createWxLogin({ baseURL: limited.baseURL, wx: fakeWx(), appid: APPID })
  await first.login() // takes the bucket's one token
  const wx = fakeWx()
  const a = createWxLogin({ baseURL: limited.baseURL, wx, appid: APPID })
  const before = await limited.mockStats()
  const t0 = Date.now()
  const s = await a.login()
  const waited = Date.now() - t0
  const after = await limited.mockStats()
  const logins = requestsTo(wx, '/v1/login')
  assert.equal(logins.length, 2)
  assert.equal(logins[0].status, 429)
  const ra = Number(logins[0].responseHeaders['Retry-After'])
  assert.ok(ra >= 1 && ra <= 3, `Retry-After ${ra}`)
  assert.ok(logins[1].at - logins[0].at >= ra * 1000 - 50, `retried ${logins[1].at - logins[0].at} ms after a Retry-After of ${ra}`)
  assert.ok(waited < 10000)
  assert.equal(logins[1].status, 200)
  assert.equal(wx.calls.login, 1)
  assert.equal(after.requests - before.requests, 1, 'the refused attempt never reached WeChat')
  assert.match(s.token, /^wxl_/)
})

test('relogin: a spent code (code_used) gets one fresh wx.login', T, async () => {
  const user = newUser()
  const spent = newCode(user)
  const r = await call(stack.serve.port, 'POST', '/openid', {
    body: { code: spent },
    headers: { 'X-WX-AppID': APPID },
  })
  assert.equal(r.status, 200)
  const queue = [spent]
  const wx = fakeWx({ user, codes: () => queue.shift() || newCode(user) })
  const a = auth(wx)
  const s = await a.login()
  const logins = requestsTo(wx, '/v1/login')
  assert.equal(logins.length, 2)
  assert.equal(logins[0].status, 400)
  assert.equal(logins[1].status, 200)
  assert.notEqual(logins[0].body, logins[1].body)
  assert.equal(wx.calls.login, 2)
  assert.equal(s.openid, r.body.openid)
})

test('relogin: codes that keep failing reject after one fresh wx.login, never a loop', T, async () => {
  const user = newUser()
  const wx = fakeWx({ user, codes: () => newCode(user, ['err40029']) })
  const a = auth(wx)
  const e = await rejection(a.login())
  assert.equal(e.statusCode, 400)
  assert.equal(e.error, 'invalid_code')
  assert.equal(e.action, 'relogin')
  assert.equal(e.wxErrcode, 40029)
  assert.equal(wx.calls.login, 2)
  assert.equal(requestsTo(wx, '/v1/login').length, 2)
})

test('relogin: an upstream failure (WeChat HTTP 500, action relogin) is one more wx.login', T, async () => {
  const user = newUser()
  let n = 0
  const wx = fakeWx({ user, codes: () => (n++ === 0 ? newCode(user, ['http500']) : newCode(user)) })
  const a = auth(wx)
  const s = await a.login()
  const logins = requestsTo(wx, '/v1/login')
  assert.deepEqual(logins.map((l) => l.status), [502, 200])
  assert.equal(wx.calls.login, 2)
  assert.match(s.token, /^wxl_/)
})
