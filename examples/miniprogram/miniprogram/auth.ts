// The app's one wxlogin client: every page imports this instance, so concurrent logins
// coalesce and the token lives in one storage key.
import { createWxLogin } from 'wxlogin-miniprogram'

// Where wxlogin answers (`make run` listens on 127.0.0.1:2020; a phone needs your HTTPS domain,
// listed among the Mini Program's request domains).
export const LOGIN_BASE = 'http://127.0.0.1:2020'

export const auth = createWxLogin({
  baseURL: LOGIN_BASE,
  // appid: 'wx...',   // when one wxlogin serves several Mini Programs
})
