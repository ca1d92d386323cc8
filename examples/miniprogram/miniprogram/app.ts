import { auth } from './auth'

App({
  onLaunch() {
    // Silent login at launch: a stored, unexpired token is used as is (no wx.login); otherwise
    // one wx.login + POST /v1/login, shared with any page that asks at the same time.
    auth.login().catch((err) => console.warn('login at launch failed', err.error, err.message))
  },
})
