'use strict'
// Behaviours 1, 2, 3, 6 and 7 of the library against a real wxlogin and mock.

const { test } = require('node:test')
const assert = require('node:assert/strict')
const http = require('node:http')
const net = require('node:net')

const { createWxLogin, WxLoginError } = require('..')
const { APPID, APPID2, call, fakeWx, newCode, newUser, requestsTo, T, useStack } = require('./helpers')

let stack
const auth = useStack((s) => (stack = s))

async function whoami(token) {
  return call(stack.serve.port, 'GET', '/v1/session', { headers: { Authorization: `Bearer ${token}` } })
}

test('1. silent login: stored under storageKey, found after a restart without wx.login', T, async () => {
  const wx = fakeWx()
  const a = auth(wx, { storageKey: 'mykey' })
  assert.equal(a.session, null)
  const s = await a.login()
  assert.match(s.token, /^wxl_/)
  assert.match(s.openid, /^o/)
  assert.ok(s.expiresAt > Date.now() + 600000 * 1000 && s.expiresAt <= Date.now() + 604800 * 1000, 'expiresAt from expires_in')
  assert.equal(wx.calls.login, 1)
  assert.equal(requestsTo(wx, '/v1/login').length, 1)
  assert.deepEqual(wx.getStorageSync('mykey'), s, 'stored with setStorageSync under storageKey')
  assert.deepEqual(a.session, s)

  // A second login() in the same run: the stored token, no wx.login.
  assert.deepEqual(await a.login(), s)
  assert.equal(wx.calls.login, 1)

  // The app restarts: a new instance on the same storage.
  const wx2 = fakeWx({ storage: wx.storage })
  const b = auth(wx2, { storageKey: 'mykey' })
  assert.deepEqual(b.session, s)
  assert.deepEqual(await b.login(), s)
  const r = await b.request({ url: '/v1/session' })
  assert.equal(r.statusCode, 200)
  assert.equal(r.data.openid, s.openid)
  assert.equal(wx2.calls.login, 0, 'no wx.login with a stored, unexpired token')
  assert.equal(requestsTo(wx2, '/v1/login').length, 0)
  assert.equal(requestsTo(wx2, '/v1/session')[0].headers.Authorization, `Bearer ${s.token}`)

  // A request() without a url is refused before anything is sent.
  await assert.rejects(b.request({}), /needs a url/)

  // Another storageKey is another session.
  const c = auth(fakeWx({ storage: wx.storage }), { storageKey: 'other' })
  assert.equal(c.session, null)
})

test('1. an expired stored token is not used: wx.login and /v1/login', T, async () => {
  const wx = fakeWx()
  const old = await auth(wx).login()
  const stale = Object.assign({}, old, { expiresAt: Date.now() - 1000 })
  wx.setStorageSync('wxlogin', stale)
  const wx2 = fakeWx({ user: wx.user, storage: wx.storage })
  const s = await auth(wx2).login()
  assert.equal(wx2.calls.login, 1)
  assert.notEqual(s.token, old.token)
  assert.equal(s.openid, old.openid)
  assert.deepEqual(wx2.getStorageSync('wxlogin'), s)
})

test('2. coalescing: 20 concurrent request() on a cold start make one wx.login and one exchange', T, async () => {
  const wx = fakeWx()
  const a = auth(wx)
  const before = await stack.mockStats()
  const results = await Promise.all(
    Array.from({ length: 20 }, (_, i) => (i % 5 === 4 ? a.login() : a.request({ url: '/v1/session' }))),
  )
  const after = await stack.mockStats()
  assert.equal(after.exchanges - before.exchanges, 1, 'one code exchanged at WeChat')
  assert.equal(after.requests - before.requests, 1, 'one code2Session request')
  assert.equal(wx.calls.login, 1, 'one wx.login')
  assert.equal(requestsTo(wx, '/v1/login').length, 1, 'one POST /v1/login')
  const openid = a.session.openid
  for (const r of results) {
    if (r.statusCode !== undefined) {
      assert.equal(r.statusCode, 200)
      assert.equal(r.data.openid, openid)
    } else {
      assert.deepEqual(r, a.session)
    }
  }
  assert.equal(requestsTo(wx, '/v1/session').length, 16)
})

test('3. a token logged out elsewhere: one relogin shared by 5 concurrent callers, each retried once', T, async () => {
  const wx = fakeWx()
  const a = auth(wx)
  const old = await a.login()
  const out = await call(stack.serve.port, 'POST', '/v1/logout', { headers: { Authorization: `Bearer ${old.token}` } })
  assert.equal(out.status, 204)
  const before = await stack.mockStats()

  const results = await Promise.all(Array.from({ length: 5 }, () => a.request({ url: '/v1/session' })))

  const after = await stack.mockStats()
  for (const r of results) {
    assert.equal(r.statusCode, 200)
    assert.equal(r.data.openid, old.openid)
  }
  assert.equal(wx.calls.login, 2, 'the first login and one relogin')
  assert.equal(requestsTo(wx, '/v1/login').length, 2)
  assert.equal(after.exchanges - before.exchanges, 1)
  const sessions = requestsTo(wx, '/v1/session')
  assert.equal(sessions.length, 10, 'each of the 5 requests sent twice: the 401, then the retry')
  assert.equal(sessions.filter((r) => r.status === 401).length, 5)
  assert.ok(sessions.filter((r) => r.status === 401).every((r) => r.headers.Authorization === `Bearer ${old.token}`))
  assert.ok(sessions.filter((r) => r.status === 200).every((r) => r.headers.Authorization === `Bearer ${a.session.token}`))
  assert.notEqual(a.session.token, old.token)
})

test('3. a 401 arriving after the relogin does not drop the new token (no second relogin)', T, async () => {
  const wx = fakeWx()
  const a = auth(wx)
  const old = await a.login()
  assert.equal((await call(stack.serve.port, 'POST', '/v1/logout', { headers: { Authorization: `Bearer ${old.token}` } })).status, 204)

  // A slow path to wxlogin: it holds back answers to the old token until the gate opens.
  let open
  const gate = new Promise((resolve) => (open = resolve))
  const proxy = http.createServer(async (req, res) => {
    const r = await call(stack.serve.port, req.method, req.url, { headers: { Authorization: req.headers.authorization } })
    if (req.headers.authorization === `Bearer ${old.token}`) await gate
    res.writeHead(r.status, { 'Content-Type': 'application/json' })
    res.end(JSON.stringify(r.body))
  })
  await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve))
  try {
    const slow = a.request({ url: '/v1/session', baseURL: `http://127.0.0.1:${proxy.address().port}` })
    const fast = await a.request({ url: '/v1/session' }) // 401, relogin, 200
    assert.equal(fast.statusCode, 200)
    const fresh = a.session.token
    open()
    const late = await slow // its 401 (old token) arrives now
    assert.equal(late.statusCode, 200)
    assert.equal(a.session.token, fresh, 'the new token was kept')
    assert.equal(wx.calls.login, 2, 'one relogin for both')
  } finally {
    proxy.close()
  }
})

test('3. a second 401 rejects: one relogin, one retry, never a loop', T, async () => {
  const wx = fakeWx()
  const a = auth(wx)
  await a.login()
  // Tokens are bound to their app: this token presented as another app's is always 401.
  const err = await a
    .request({ url: '/v1/session', header: { 'X-WX-AppID': APPID2 } })
    .then(() => assert.fail('resolved'), (e) => e)
  assert.ok(err instanceof WxLoginError)
  assert.ok(err instanceof Error)
  assert.equal(err.statusCode, 401)
  assert.equal(err.error, 'invalid_token')
  assert.equal(err.action, 'relogin')
  assert.equal(typeof err.message, 'string')
  assert.equal(requestsTo(wx, '/v1/session').length, 2)
  assert.equal(wx.calls.login, 2)
  // Nothing is stuck: the next request works.
  const r = await a.request({ url: '/v1/session' })
  assert.equal(r.statusCode, 200)
})

test('3. a non-wxlogin error body is resolved, a wxlogin error with action none rejects', T, async () => {
  const wx = fakeWx()
  const a = auth(wx)
  await a.login()
  const srv = http.createServer((req, res) => {
    res.writeHead(404, { 'Content-Type': 'application/json' })
    res.end(JSON.stringify({ code: 'nope', auth: req.headers.authorization }))
  })
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve))
  try {
    const r = await a.request({ url: '/thing', baseURL: `http://127.0.0.1:${srv.address().port}`, header: { 'X-Trace': 't1' } })
    assert.equal(r.statusCode, 404)
    assert.deepEqual(r.data, { code: 'nope', auth: `Bearer ${a.session.token}` })
    assert.equal(requestsTo(wx, '/thing')[0].headers['X-Trace'], 't1')
  } finally {
    srv.close()
  }
  const err = await a.request({ url: '/no/such/path' }).then(() => assert.fail('resolved'), (e) => e)
  assert.equal(err.statusCode, 404)
  assert.equal(err.error, 'not_found')
  assert.equal(err.action, 'none')
  assert.equal(requestsTo(wx, '/no/such/path').length, 1, 'action none is not retried')
})

test('6. ensureFreshSessionKey: wx.login only when wx.checkSession says the key is stale', T, async () => {
  const wx = fakeWx()
  const a = auth(wx)
  const port = stack.serve.port

  // No session at all: a login.
  const s1 = await a.ensureFreshSessionKey()
  assert.equal(wx.calls.login, 1)
  const check1 = await call(port, 'GET', '/v1/session/check', { headers: { Authorization: `Bearer ${s1.token}` } })
  assert.deepEqual(check1.body, { valid: true })

  // WeChat says the key is current: nothing else happens.
  const s2 = await a.ensureFreshSessionKey()
  assert.deepEqual(s2, s1)
  assert.equal(wx.calls.login, 1)
  assert.equal(wx.calls.checkSession, 2)

  // The user logs in on WeChat elsewhere (another code exchanged): the key wxlogin holds is stale.
  const q = new URLSearchParams({
    appid: 'wx1234567890abcdef',
    secret: '0123456789abcdef0123456789abcdef',
    js_code: newCode(wx.user),
    grant_type: 'authorization_code',
  })
  const ex = await call(stack.mock.port, 'GET', `/sns/jscode2session?${q}`)
  assert.equal(ex.status, 200)
  const check2 = await call(port, 'GET', '/v1/session/check', { headers: { Authorization: `Bearer ${s1.token}` } })
  assert.deepEqual(check2.body, { valid: false })

  wx.sessionFresh = false
  const s3 = await a.ensureFreshSessionKey()
  assert.equal(wx.calls.login, 2, 'one wx.login for the stale key')
  assert.notEqual(s3.token, s1.token)
  assert.equal(s3.openid, s1.openid)
  const check3 = await call(port, 'GET', '/v1/session/check', { headers: { Authorization: `Bearer ${s3.token}` } })
  assert.deepEqual(check3.body, { valid: true }, 'wxlogin now holds the current session_key')
})

test('7. wx.login fail callback: every waiting caller rejects with a clear error, then it recovers', T, async () => {
  const wx = fakeWx()
  wx.loginMode = 'fail'
  const a = auth(wx)
  const errs = await Promise.all([a.login(), a.request({ url: '/v1/session' }), a.login()].map((p) => p.then(() => null, (e) => e)))
  for (const e of errs) {
    assert.ok(e instanceof WxLoginError)
    assert.equal(e.error, 'wx_login_failed')
    assert.match(e.message, /wx\.login failed: login:fail system error/)
  }
  assert.equal(wx.calls.login, 1)
  wx.loginMode = 'ok'
  const s = await a.login()
  assert.match(s.token, /^wxl_/)
  assert.equal(wx.calls.login, 2)
})

test('7. wx.login that never calls back: rejected after loginTimeout', T, async () => {
  const wx = fakeWx()
  wx.loginMode = 'silent'
  const a = auth(wx, { loginTimeout: 200 })
  const t0 = Date.now()
  const e = await a.login().then(() => null, (x) => x)
  assert.ok(e instanceof WxLoginError)
  assert.equal(e.error, 'timeout')
  assert.match(e.message, /wx\.login did not answer/)
  assert.ok(Date.now() - t0 < 10000)
  wx.loginMode = 'ok'
  await a.login()
})

test('7. wx.request fail (connection refused) and timeout reject; a silent wx.request is given up', T, async () => {
  // Refused: nothing listens on the port of a server just closed.
  const closed = net.createServer()
  await new Promise((resolve) => closed.listen(0, '127.0.0.1', resolve))
  const deadPort = closed.address().port
  await new Promise((resolve) => closed.close(resolve))
  const wx1 = fakeWx()
  const e1 = await createWxLogin({ baseURL: `http://127.0.0.1:${deadPort}`, wx: wx1, appid: APPID })
    .login()
    .then(() => null, (x) => x)
  assert.ok(e1 instanceof WxLoginError)
  assert.equal(e1.error, 'request_failed')
  assert.equal(e1.statusCode, 0)
  assert.match(e1.message, /wx\.request .*\/v1\/login failed: request:fail .*ECONNREFUSED/)

  // Timeout: a server that accepts and never answers.
  const sockets = []
  const hang = net.createServer((s) => sockets.push(s))
  await new Promise((resolve) => hang.listen(0, '127.0.0.1', resolve))
  try {
    const wx2 = fakeWx()
    const a = auth(wx2)
    await a.login()
    const e2 = await a
      .request({ url: `http://127.0.0.1:${hang.address().port}/slow`, timeout: 300 })
      .then(() => null, (x) => x)
    assert.equal(e2.error, 'timeout')
    assert.match(e2.message, /request:fail timeout/)
    assert.equal(requestsTo(wx2, '/slow').length, 1, 'a timed-out request is not retried')

    // A wx.request that calls neither success nor fail: the library's own guard ends it.
    wx2.requestMode = 'silent'
    const t0 = Date.now()
    const e3 = await a.request({ url: '/v1/session', timeout: 100 }).then(() => null, (x) => x)
    assert.equal(e3.error, 'timeout')
    assert.match(e3.message, /did not answer within 100 ms/)
    assert.ok(Date.now() - t0 < 10000)
  } finally {
    for (const s of sockets) s.destroy()
    hang.close()
  }
})

test('appid: sent as X-WX-AppID, so a second app served by the same wxlogin logs in', T, async () => {
  const user = newUser()
  const wx = fakeWx({ user, codes: () => newCode(user, [], APPID2) })
  const a = auth(wx, { appid: APPID2 })
  const s = await a.login()
  assert.equal(requestsTo(wx, '/v1/login')[0].headers['X-WX-AppID'], APPID2)
  const who = await whoami(s.token)
  assert.equal(who.body.appid, APPID2)
  // Without it, a wxlogin serving several apps cannot tell which: 400 unknown_app, action none,
  // surfaced at once.
  const wx3 = fakeWx({ user, codes: () => newCode(user, [], APPID2) })
  const e = await createWxLogin({ baseURL: stack.baseURL, wx: wx3 }).login().then(() => null, (x) => x)
  assert.equal(e.statusCode, 400)
  assert.equal(e.error, 'unknown_app')
  assert.equal(e.action, 'none')
  assert.equal(wx3.calls.login, 1)
  assert.equal(requestsTo(wx3, '/v1/login').length, 1)
})
