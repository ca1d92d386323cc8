// The tutorial's page, with the library: the button logs in. Before, the page called wx.login,
// sent the code with wx.request and kept the token itself; now auth.login() does all of it,
// reuses a stored token, and shares one wx.login with every other page asking at once.
import type { WxLoginError } from 'wxlogin-miniprogram'
import { auth } from '../../auth'

Page({
  data: {
    busy: false,
    openid: auth.session ? auth.session.openid : '',
    error: '',
  },

  async onLogin() {
    this.setData({ busy: true, error: '' })
    try {
      const session = await auth.login()
      this.setData({ openid: session.openid })
    } catch (e) {
      const err = e as WxLoginError
      // err.action: 'none' (e.g. user_blocked: WeChat refused this user) or 'retry'/'relogin'
      // after the library's own retry: tell the user, let them tap again.
      this.setData({ error: `${err.error}: ${err.message}` })
    } finally {
      this.setData({ busy: false })
    }
  },
})
