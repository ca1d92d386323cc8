'use strict'
// Behaviour 5 (renewal with POST /v1/refresh) and logout, against a real wxlogin and mock.

const { test } = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('node:crypto')

const { APPID, call, fakeWx, requestsTo, T, useStack } = require('./helpers')

const ADMIN_TOKEN = crypto.randomBytes(32).toString('hex')
let stack
const auth = useStack((s) => (stack = s), { env: { WXLOGIN_ADMIN_TOKEN: ADMIN_TOKEN } })

function bearer(token) {
  return { headers: { Authorization: `Bearer ${token}` } }
}

function whoami(token) {
  return call(stack.serve.port, 'GET', '/v1/session', bearer(token))
}

// The phone's clock moves on: the stored session now has `seconds` left, so a restarted app
// finds it within refreshBefore (wxlogin's own expiry is the real one, much later).
function ageStored(wx, seconds) {
  const s = wx.getStorageSync('wxlogin')
  s.expiresAt = Date.now() + seconds * 1000
  wx.setStorageSync('wxlogin', s)
  return fakeWx({ user: wx.user, storage: wx.storage })
}

test('5. far from expiry: no refresh', T, async () => {
  const wx = fakeWx()
  const a = auth(wx)
  await a.login()
  const r = await a.request({ url: '/v1/session' })
  assert.equal(r.statusCode, 200)
  assert.equal(requestsTo(wx, '/v1/refresh').length, 0)
})

test('5. within refreshBefore: one coalesced POST /v1/refresh for 10 concurrent requests, new token stored', T, async () => {
  const wx0 = fakeWx()
  const old = await auth(wx0).login()
  const wx = ageStored(wx0, 600) // 600 s left, refreshBefore 3600
  const a = auth(wx)
  const results = await Promise.all(Array.from({ length: 10 }, () => a.request({ url: '/v1/session' })))
  const refreshes = requestsTo(wx, '/v1/refresh')
  assert.equal(refreshes.length, 1, 'one refresh for all callers')
  assert.equal(refreshes[0].status, 200)
  assert.equal(refreshes[0].headers.Authorization, `Bearer ${old.token}`)
  assert.equal(refreshes[0].headers['X-WX-AppID'], APPID)
  assert.equal(wx.calls.login, 0, 'renewal needs no wx.login')
  const s = a.session
  assert.notEqual(s.token, old.token)
  assert.equal(s.openid, old.openid)
  assert.ok(s.expiresAt > Date.now() + 3600 * 1000, 'the new expiry is stored, past refreshBefore')
  assert.deepEqual(wx.getStorageSync('wxlogin'), s)
  for (const r of results) assert.equal(r.statusCode, 200)
  assert.ok(requestsTo(wx, '/v1/session').every((r) => r.headers.Authorization === `Bearer ${s.token}`))
  assert.equal((await whoami(s.token)).status, 200)

  // The next requests use the renewed token as it is.
  await a.request({ url: '/v1/session' })
  assert.equal(requestsTo(wx, '/v1/refresh').length, 1)
})

test('5. a refresh answered 401 falls back to one fresh login', T, async () => {
  const wx0 = fakeWx()
  const old = await auth(wx0).login()
  const out = await call(stack.serve.port, 'POST', '/v1/logout', bearer(old.token))
  assert.equal(out.status, 204)
  const wx = ageStored(wx0, 600)
  const a = auth(wx)
  const results = await Promise.all(Array.from({ length: 3 }, () => a.request({ url: '/v1/session' })))
  for (const r of results) assert.equal(r.statusCode, 200)
  const refreshes = requestsTo(wx, '/v1/refresh')
  assert.equal(refreshes.length, 1)
  assert.equal(refreshes[0].status, 401)
  assert.equal(wx.calls.login, 1)
  assert.equal(requestsTo(wx, '/v1/login').length, 1)
  assert.equal(requestsTo(wx, '/v1/session').length, 3, 'each request sent once, with the new token')
  assert.notEqual(a.session.token, old.token)
})

test('logout(): POST /v1/logout, the token dies and is forgotten; a 401 counts as logged out', T, async () => {
  const wx = fakeWx()
  const a = auth(wx)
  const s = await a.login()
  await a.logout()
  const outs = requestsTo(wx, '/v1/logout')
  assert.equal(outs.length, 1)
  assert.equal(outs[0].status, 204)
  assert.equal(outs[0].headers.Authorization, `Bearer ${s.token}`)
  assert.equal(a.session, null)
  assert.equal(wx.getStorageSync('wxlogin'), '')
  assert.equal((await whoami(s.token)).status, 401)

  // Logged out elsewhere already: logout() still resolves and forgets the token.
  const s2 = await a.login()
  assert.equal((await call(stack.serve.port, 'POST', '/v1/logout', bearer(s2.token))).status, 204)
  await a.logout()
  assert.equal(requestsTo(wx, '/v1/logout')[1].status, 401)
  assert.equal(a.session, null)

  // Nothing to log out of: no request.
  await a.logout()
  assert.equal(requestsTo(wx, '/v1/logout').length, 2)
})

test('logout({ all: true }) ends the user\'s other sessions too', T, async () => {
  const phone = fakeWx()
  const tablet = fakeWx({ user: phone.user })
  const a = auth(phone)
  const b = auth(tablet)
  const sa = await a.login()
  const sb = await b.login()
  assert.equal(sa.openid, sb.openid)
  assert.notEqual(sa.token, sb.token)
  await a.logout({ all: true })
  assert.equal(JSON.parse(requestsTo(phone, '/v1/logout')[0].body).all, true)
  assert.equal(requestsTo(phone, '/v1/logout')[0].status, 204)
  assert.equal((await whoami(sb.token)).status, 401, 'the other device\'s token is dead')
  // The other device finds out on its next request and logs in again, once.
  const r = await b.request({ url: '/v1/session' })
  assert.equal(r.statusCode, 200)
  assert.equal(tablet.calls.login, 2)
})

test('a banned user: the revoked token leads to one relogin, whose 403 user_banned is surfaced', T, async () => {
  const wx = fakeWx()
  const a = auth(wx)
  const s = await a.login()
  const ban = await call(stack.serve.port, 'POST', `/admin/v1/apps/${APPID}/users/${s.openid}/ban`, {
    body: { reason: 'test' },
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, 'Content-Type': 'application/json' },
  })
  assert.equal(ban.status, 200)
  const e = await a.request({ url: '/v1/session' }).then(() => assert.fail('resolved'), (x) => x)
  assert.equal(e.statusCode, 403)
  assert.equal(e.error, 'user_banned')
  assert.equal(e.action, 'none')
  assert.equal(wx.calls.login, 2, 'one relogin, not a loop')
  assert.equal(requestsTo(wx, '/v1/login').length, 2)
  assert.equal(requestsTo(wx, '/v1/session').length, 1)
})

test('logout() during a login in flight ends the session that login makes', T, async () => {
  const wx = fakeWx()
  const a = auth(wx)
  const pending = a.login()
  await a.logout()
  const s = await pending
  assert.equal(a.session, null, 'not stored after the logout')
  assert.equal(requestsTo(wx, '/v1/logout').length, 1)
  assert.equal(requestsTo(wx, '/v1/logout')[0].headers.Authorization, `Bearer ${s.token}`)
  assert.equal((await whoami(s.token)).status, 401)
})
