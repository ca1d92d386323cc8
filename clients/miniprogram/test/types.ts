// Type-checked by `npm run typecheck` (tsc --noEmit), never run: the declarations accept what
// the README shows and refuse what the library does not take.
import { createWxLogin, WxLoginError, WxLoginSession } from '..'

const auth = createWxLogin({
  baseURL: 'https://login.example.com',
  appid: 'wx1234567890abcdef',
  wx,
  storageKey: 'wxlogin',
  refreshBefore: 3600,
})

async function use(): Promise<void> {
  const s: WxLoginSession = await auth.login()
  const token: string = s.token
  const unionid: string | undefined = s.unionid
  const at: number = s.expiresAt

  const r = await auth.request<{ openid: string }>({ url: '/v1/session', method: 'GET' })
  const openid: string = r.data.openid
  const status: number = r.statusCode

  await auth.request({ url: 'https://api.example.com/orders', method: 'POST', data: { n: 1 }, baseURL: 'x', timeout: 5000 })
  await auth.logout({ all: true })
  await auth.logout()
  const fresh: WxLoginSession = await auth.ensureFreshSessionKey()
  const now: WxLoginSession | null = auth.session

  try {
    await auth.login()
  } catch (e) {
    const err = e as WxLoginError
    const fields: [number, string, 'relogin' | 'retry' | 'none', number | undefined] = [
      err.statusCode,
      err.error,
      err.action,
      err.wxErrcode,
    ]
    void fields
  }
  void [token, unionid, at, openid, status, fresh, now]
}
void use

// @ts-expect-error baseURL is required
createWxLogin({ appid: 'wx1' })
// @ts-expect-error the callbacks are the library's
auth.request({ url: '/x', success: () => {} })
// @ts-expect-error session is read-only
auth.session = null
// @ts-expect-error logout takes { all }
auth.logout(true)
