// A page that calls a protected API. auth.request() adds `Authorization: Bearer`, logs in first
// if need be, renews a token close to expiry, and on a 401 (logged out elsewhere, expired) logs
// in once and retries once. The API here is wxlogin's own GET /v1/session ("who am I"); your
// backend behind contrib/nginx/wxlogin-auth.conf is called the same way, with its own baseURL.
import type { WxLoginError } from 'wxlogin-miniprogram'
import { auth } from '../../auth'

interface Me {
  openid: string
  unionid?: string
  appid: string
  expires_in: number
}

Page({
  data: { openid: '', expiresIn: 0, error: '' },

  async onLoad() {
    try {
      const res = await auth.request<Me>({ url: '/v1/session', method: 'GET' })
      if (res.statusCode === 200) {
        this.setData({ openid: res.data.openid, expiresIn: res.data.expires_in, error: '' })
      } else {
        this.setData({ error: `HTTP ${res.statusCode}` })
      }
    } catch (e) {
      const err = e as WxLoginError
      this.setData({ error: `${err.error}: ${err.message}` })
    }
  },

  async onLogout() {
    await this.logout(false)
  },

  async onLogoutEverywhere() {
    await this.logout(true)
  },

  async logout(all: boolean) {
    try {
      await auth.logout({ all })
      wx.reLaunch({ url: '/pages/index/index' })
    } catch (e) {
      const err = e as WxLoginError
      this.setData({ error: `${err.error}: ${err.message}` })
    }
  },
})
