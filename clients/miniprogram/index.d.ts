// Type declarations for wxlogin-miniprogram, typed with miniprogram-api-typings (the `wx` of a
// TypeScript Mini Program project). See README.md for the behaviour behind each member.
/// <reference types="miniprogram-api-typings" />

/** The session the library keeps (wx.setStorageSync under `storageKey`). */
export interface WxLoginSession {
  /** wxlogin's bearer token (`wxl_...`). */
  token: string
  openid: string
  /** Present when WeChat knows one (the app is bound to an Open Platform account). */
  unionid?: string
  /** When the token dies, in milliseconds since the epoch (from `expires_in`). */
  expiresAt: number
}

/** The `wx` members the library uses: any full `wx` object satisfies it. */
export type WxLoginWx = Pick<
  WechatMiniprogram.Wx,
  'login' | 'request' | 'checkSession' | 'getStorageSync' | 'setStorageSync' | 'removeStorageSync'
>

export interface WxLoginOptions {
  /** Where wxlogin answers /v1/login, /v1/refresh and /v1/logout, e.g. `https://login.example.com`. */
  baseURL: string
  /** Sent as `X-WX-AppID` to wxlogin, when several apps share one wxlogin. */
  appid?: string
  /** Defaults to the global `wx`. */
  wx?: WxLoginWx
  /** The one storage key used with wx.setStorageSync (default `wxlogin`). */
  storageKey?: string
  /** Seconds before expiry when request() renews the token first (default 3600). */
  refreshBefore?: number
  /** Longest `Retry-After` (seconds) waited for before one retry; a longer one rejects at once (default 60). */
  maxRetryAfter?: number
  /** Milliseconds for each wx.request the library makes, unless request() options say otherwise (default 10000). */
  timeout?: number
  /** Milliseconds for wx.login and wx.checkSession (default 10000). */
  loginTimeout?: number
}

/** wx.request's options without the callbacks; `url` is absolute or relative to `baseURL`. */
export interface WxLoginRequestOptions<
  T extends string | WechatMiniprogram.IAnyObject | ArrayBuffer =
    | string
    | WechatMiniprogram.IAnyObject
    | ArrayBuffer,
> extends Omit<WechatMiniprogram.RequestOption<T>, 'success' | 'fail' | 'complete'> {
  /** The base of a relative `url` (default: the `baseURL` given to createWxLogin). */
  baseURL?: string
}

/** What request() resolves: the fields of wx.request's success result. */
export interface WxLoginResponse<
  T extends string | WechatMiniprogram.IAnyObject | ArrayBuffer =
    | string
    | WechatMiniprogram.IAnyObject
    | ArrayBuffer,
> {
  statusCode: number
  data: T
  header: WechatMiniprogram.IAnyObject
}

export type WxLoginAction = 'relogin' | 'retry' | 'none'

/** Every rejection of the library. */
export interface WxLoginError extends Error {
  name: 'WxLoginError'
  /** The HTTP status; 0 when there was no HTTP answer (wx.login failed, network, timeout). */
  statusCode: number
  /**
   * wxlogin's error slug (`invalid_token`, `user_blocked`, `rate_limited`, ...) or one of the
   * library's: `wx_login_failed`, `request_failed`, `timeout`, `bad_response`.
   */
  error: string
  action: WxLoginAction
  /** WeChat's errcode, when wxlogin reported one. */
  wxErrcode?: number
  /** Seconds, from the answer's Retry-After header. */
  retryAfter?: number
  /** The body of the HTTP answer, when there was one. */
  data?: unknown
  /** The wx API's fail result, when the error came from one. */
  cause?: unknown
}

export interface WxLoginErrorConstructor {
  (fields: Partial<Omit<WxLoginError, 'name' | 'stack'>>): WxLoginError
  new (fields: Partial<Omit<WxLoginError, 'name' | 'stack'>>): WxLoginError
  readonly prototype: WxLoginError
}

export declare const WxLoginError: WxLoginErrorConstructor

export interface WxLogin {
  /** A stored, unexpired session as is; else wx.login + POST /v1/login (one for all concurrent callers). */
  login(): Promise<WxLoginSession>
  /** wx.request with `Authorization: Bearer`, logging in, renewing and retrying once as wxlogin says. */
  request<
    T extends string | WechatMiniprogram.IAnyObject | ArrayBuffer =
      | string
      | WechatMiniprogram.IAnyObject
      | ArrayBuffer,
  >(
    options: WxLoginRequestOptions<T>,
  ): Promise<WxLoginResponse<T>>
  /** POST /v1/logout (`{all: true}`: every session of the user), then forget the token. */
  logout(options?: { all?: boolean }): Promise<void>
  /** Before an encryptedData flow: wx.checkSession, and a fresh login only if the session_key is stale. */
  ensureFreshSessionKey(): Promise<WxLoginSession>
  /** The stored session (a copy), or null. */
  readonly session: WxLoginSession | null
}

export declare function createWxLogin(options: WxLoginOptions): WxLogin
