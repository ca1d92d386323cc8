"""Mini Program data opened with the user's session_key: POST /v1/decrypt,
POST /v1/check-signature, GET /v1/session/check (issue: Mini Program data).

The phone's part (AES-128-CBC with the session_key, SHA-1 signatures) is played here: the
session_key comes from the mock's debug route, encryption from the `openssl` CLI.
"""

import base64
import hashlib
import http.client
import json
import os
import subprocess
import time
import urllib.parse

import pytest

from conftest import (DEFAULT_APPID, DEFAULT_SECRET, assert_error, new_code, post_json, request)

OTHER_APPID = "wx0000000000000000"


# --------------------------------------------------------------------------
# helpers: the phone's side
# --------------------------------------------------------------------------

def raw_get(port, path):
    """GET with http.client directly: conftest.request() rejects bodies naming session_key."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def mock_session_key(mock, openid):
    q = urllib.parse.urlencode({"appid": DEFAULT_APPID, "openid": openid})
    status, body = raw_get(mock.port, f"/mock/session_key?{q}")
    assert status == 200, (status, body)
    sk = json.loads(body)["session_key"]
    assert len(base64.b64decode(sk)) == 16
    return sk


def rotate_at_mock(mock, user):
    """Logs the user in at the mock directly (as another backend or device would): WeChat's
    current session_key changes without wxlogin knowing. Returns the new key."""
    q = urllib.parse.urlencode({"appid": DEFAULT_APPID, "secret": DEFAULT_SECRET,
                                "js_code": new_code(user), "grant_type": "authorization_code"})
    status, body = raw_get(mock.port, f"/sns/jscode2session?{q}")
    assert status == 200, (status, body)
    return json.loads(body)["session_key"]


def login(port, user):
    """Logs user in through wxlogin: (token, openid)."""
    r = post_json(port, "/v1/login", {"code": new_code(user)})
    assert r.status == 200, r
    b = r.json()
    return b["token"], b["openid"]


def auth(token):
    return {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}


def aes_encrypt(sk_b64, plaintext, iv=None):
    """AES-128-CBC + PKCS#7 (openssl's default padding) with the session_key: (ct, iv)."""
    key = base64.b64decode(sk_b64)
    assert len(key) == 16
    if iv is None:
        iv = os.urandom(16)
    if isinstance(plaintext, str):
        plaintext = plaintext.encode("utf-8")
    cp = subprocess.run(["openssl", "enc", "-aes-128-cbc", "-K", key.hex(), "-iv", iv.hex()],
                        input=plaintext, capture_output=True, timeout=10)
    assert cp.returncode == 0, cp.stderr
    assert len(cp.stdout) % 16 == 0 and len(cp.stdout) > len(plaintext)
    return cp.stdout, iv


def user_info(openid, appid=DEFAULT_APPID, **extra):
    obj = {"openId": openid, "nickName": "张三 Band", "gender": 1, "city": "Guangzhou",
           "avatarUrl": "http://wx.qlogo.cn/mmopen/vi_32/aSKcBBPpibyKNicHNTMM0qJVh8Kjgiak2AHWr8MH"}
    obj.update(extra)
    if appid is not None:
        obj["watermark"] = {"appid": appid, "timestamp": int(time.time())}
    return obj


def sealed(sk_b64, obj, iv=None):
    """The request body fields a Mini Program sends for obj encrypted with sk_b64."""
    pt = obj if isinstance(obj, (bytes, str)) else json.dumps(obj, ensure_ascii=False)
    ct, iv = aes_encrypt(sk_b64, pt, iv)
    return {"encryptedData": base64.b64encode(ct).decode(), "iv": base64.b64encode(iv).decode()}


def decrypt(port, token, fields):
    body = fields if isinstance(fields, (bytes, str)) else json.dumps(fields)
    return post_json(port, "/v1/decrypt", body, headers=auth(token))


def assert_decrypted(resp, expected):
    assert resp.status == 200, resp
    body = resp.json()
    assert set(body) == {"data"}, body
    assert body["data"] == expected, body


def assert_decrypt_failed(resp):
    assert_error(resp, 422, "decrypt_failed", "relogin")


def assert_watermark_mismatch(resp):
    assert_error(resp, 422, "watermark_mismatch", "none")   # (nothing of the data either)


def sign(raw, sk):
    return hashlib.sha1(raw.encode("utf-8") + sk.encode("utf-8")).hexdigest()


def check_signature(port, token, raw, sig):
    return post_json(port, "/v1/check-signature", {"rawData": raw, "signature": sig},
                     headers=auth(token))


def valid_of(resp):
    assert resp.status == 200, resp
    body = resp.json()
    assert set(body) == {"valid"} and isinstance(body["valid"], bool), body
    return body["valid"]


def session_check(port, token):
    return request(port, "GET", "/v1/session/check", headers={"Authorization": f"Bearer {token}"})


def stats(mock):
    return mock.stats()


def assert_invalid_token(resp):
    assert_error(resp, 401, "invalid_token", "relogin")
    assert resp.headers.get("www-authenticate") == 'Bearer error="invalid_token"', resp


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def srv(module_procs, mock):
    """One serve for the module (default session_key_grace of 300 s)."""
    return module_procs.serve(mock=mock)


@pytest.fixture
def user(srv, mock):
    """A freshly logged-in user: (token, openid, session_key)."""
    name = "ud" + os.urandom(4).hex()
    token, openid = login(srv.port, name)
    return token, openid, mock_session_key(mock, openid)


# --------------------------------------------------------------------------
# POST /v1/decrypt
# --------------------------------------------------------------------------

def test_decrypt_round_trip(srv, user):
    token, openid, sk = user
    obj = user_info(openid, extra_list=[1, 2.5, None, True], nested={"a": {"b": "ü"}})
    assert_decrypted(decrypt(srv.port, token, sealed(sk, obj)), obj)


def test_decrypt_block_sized_plaintext(srv, user):
    """A plaintext of a whole number of blocks gets a full padding block."""
    token, openid, sk = user
    obj = user_info(openid, pad="")
    obj["pad"] = "x" * ((-len(json.dumps(obj, ensure_ascii=False).encode())) % 16)
    text = json.dumps(obj, ensure_ascii=False)
    assert len(text.encode()) % 16 == 0, len(text)
    assert_decrypted(decrypt(srv.port, token, sealed(sk, text)), obj)


def test_decrypt_spaces_stand_for_plus(srv, user):
    """A '+' in base64 turns into a space when the client sends it form-encoded somewhere
    on the way; the service reads spaces as '+' in both fields."""
    token, openid, sk = user
    obj = user_info(openid)
    for _ in range(500):
        f = sealed(sk, obj)
        if "+" in f["encryptedData"] and "+" in f["iv"]:
            break
    else:
        pytest.fail("could not produce base64 with '+' in both fields")
    spaced = {k: v.replace("+", " ") for k, v in f.items()}
    assert " " in spaced["encryptedData"] and " " in spaced["iv"]
    assert_decrypted(decrypt(srv.port, token, spaced), obj)


def test_decrypt_wrong_watermark_is_422(srv, user):
    token, openid, sk = user
    assert_watermark_mismatch(decrypt(srv.port, token, sealed(sk, user_info(openid, OTHER_APPID))))
    # our appid as a prefix or with a suffix is still another app
    assert_watermark_mismatch(
        decrypt(srv.port, token, sealed(sk, user_info(openid, DEFAULT_APPID + "0"))))
    assert_watermark_mismatch(
        decrypt(srv.port, token, sealed(sk, user_info(openid, DEFAULT_APPID[:-1]))))


@pytest.mark.parametrize("obj", [
    {"openId": "x"},                                     # no watermark
    {"openId": "x", "watermark": {}},                     # no appid
    {"openId": "x", "watermark": {"appid": 12345}},       # not a string
    {"openId": "x", "watermark": DEFAULT_APPID},          # watermark not an object
    {"openId": "x", "appid": DEFAULT_APPID},              # appid outside the watermark
], ids=["none", "no-appid", "appid-number", "watermark-string", "appid-top-level"])
def test_decrypt_missing_or_malformed_watermark_is_422(srv, user, obj):
    token, _, sk = user
    assert_watermark_mismatch(decrypt(srv.port, token, sealed(sk, obj)))


def _tamper_padding(f):
    """Flip the last byte of the second-to-last block: the pad byte becomes > 16."""
    ct = bytearray(base64.b64decode(f["encryptedData"]))
    assert len(ct) >= 32
    # plaintext pad byte p turns into p ^ x; choose x so the result is 0x20 | p-ish (> 16)
    ct[-17] ^= 0x20
    return {"encryptedData": base64.b64encode(bytes(ct)).decode(), "iv": f["iv"]}


def _tamper_first_block(f):
    """Flip a byte of the first block: it decrypts to garbage, the padding stays valid."""
    ct = bytearray(base64.b64decode(f["encryptedData"]))
    assert len(ct) >= 48
    ct[3] ^= 0x55
    return {"encryptedData": base64.b64encode(bytes(ct)).decode(), "iv": f["iv"]}


def _tamper_iv(f):
    """A different iv changes the first plaintext block: '{' becomes 'z'."""
    iv = bytearray(base64.b64decode(f["iv"]))
    iv[0] ^= 0x01
    return {"encryptedData": f["encryptedData"], "iv": base64.b64encode(bytes(iv)).decode()}


@pytest.mark.parametrize("case", ["padding", "first_block", "iv", "random_key", "not_json",
                                  "json_array", "json_string", "truncated_json"])
def test_decrypt_failures_are_422_relogin(srv, user, case):
    token, openid, sk = user
    obj = user_info(openid)
    good = sealed(sk, obj)
    if case == "padding":
        f = _tamper_padding(good)
    elif case == "first_block":
        f = _tamper_first_block(good)
    elif case == "iv":
        f = _tamper_iv(good)
    elif case == "random_key":
        f = sealed(base64.b64encode(os.urandom(16)).decode(), obj)
    elif case == "not_json":
        f = sealed(sk, b"this is not JSON at all, but it is padded well")
    elif case == "json_array":
        f = sealed(sk, json.dumps([obj]))
    elif case == "json_string":
        f = sealed(sk, json.dumps("watermark"))
    else:
        f = sealed(sk, json.dumps(obj)[:-1])
    assert_decrypt_failed(decrypt(srv.port, token, f))
    # the untouched data still opens: the failure was the data's, not the session's
    assert_decrypted(decrypt(srv.port, token, good), obj)


def _b64(n):
    return base64.b64encode(os.urandom(n)).decode()


GOOD_IV = _b64(16)
GOOD_CT = _b64(48)

BAD_DECRYPT_BODIES = {
    "ct-not-base64": {"encryptedData": "!!!!" + GOOD_CT[4:], "iv": GOOD_IV},
    "ct-base64-length-not-4n": {"encryptedData": GOOD_CT[:-1], "iv": GOOD_IV},
    "iv-not-base64": {"encryptedData": GOOD_CT, "iv": "*" * 24},
    "iv-15-bytes": {"encryptedData": GOOD_CT, "iv": _b64(15)},
    "iv-17-bytes": {"encryptedData": GOOD_CT, "iv": _b64(17)},
    "iv-12-bytes": {"encryptedData": GOOD_CT, "iv": _b64(12)},
    "iv-32-bytes": {"encryptedData": GOOD_CT, "iv": _b64(32)},
    "iv-empty": {"encryptedData": GOOD_CT, "iv": ""},
    "ct-empty": {"encryptedData": "", "iv": GOOD_IV},
    "ct-15-bytes": {"encryptedData": _b64(15), "iv": GOOD_IV},
    "ct-17-bytes": {"encryptedData": _b64(17), "iv": GOOD_IV},
    "ct-40-bytes": {"encryptedData": _b64(40), "iv": GOOD_IV},
    "ct-1-byte": {"encryptedData": _b64(1), "iv": GOOD_IV},
    "missing-encryptedData": {"iv": GOOD_IV},
    "missing-iv": {"encryptedData": GOOD_CT},
    "empty-object": {},
    "ct-number": {"encryptedData": 12345, "iv": GOOD_IV},
    "ct-null": {"encryptedData": None, "iv": GOOD_IV},
    "ct-array": {"encryptedData": [GOOD_CT], "iv": GOOD_IV},
    "iv-number": {"encryptedData": GOOD_CT, "iv": 16},
    "iv-object": {"encryptedData": GOOD_CT, "iv": {"iv": GOOD_IV}},
    "iv-bool": {"encryptedData": GOOD_CT, "iv": True},
    "not-json": b"encryptedData=abc&iv=def",
    "json-array": json.dumps([GOOD_CT, GOOD_IV]).encode(),
    "json-string": json.dumps(GOOD_CT).encode(),
    "truncated-json": json.dumps({"encryptedData": GOOD_CT, "iv": GOOD_IV}).encode()[:-2],
    "empty-body": b"",
}


def _body(v):
    return v if isinstance(v, bytes) else json.dumps(v).encode()


@pytest.mark.parametrize("name", list(BAD_DECRYPT_BODIES))
def test_decrypt_bad_request_is_400(srv, user, name):
    token, _, _ = user
    r = post_json(srv.port, "/v1/decrypt", _body(BAD_DECRYPT_BODIES[name]), headers=auth(token))
    assert_error(r, 400, "bad_request", "none")


def test_decrypt_400_touches_neither_store_nor_wechat(procs, mock, tmp_path):
    """Bad input is refused before the store is asked: with the store failing, every bad
    request still answers 400 (a request that reaches the store answers 503), and the mock
    sees nothing."""
    s = procs.serve(mock=mock, env={"WXLOGIN_STORE": f"sqlite:{tmp_path}/wx.db"})
    token, openid = login(s.port, "udstore")
    sk = mock_session_key(mock, openid)
    good = sealed(sk, user_info(openid))
    assert decrypt(s.port, token, good).status == 200

    # the database file is replaced under the running service: the store now fails
    for name in os.listdir(tmp_path):
        if name.startswith("wx.db") and not name.endswith(".key"):
            os.rename(tmp_path / name, tmp_path / f"moved-{name}")
    (tmp_path / "wx.db").write_bytes(b"not a database")
    assert_error(decrypt(s.port, token, good), 503, "store_unavailable", "retry")

    before = stats(mock)
    for name, body in BAD_DECRYPT_BODIES.items():
        r = post_json(s.port, "/v1/decrypt", _body(body), headers=auth(token))
        assert r.status == 400, f"{name}: {r}"
        assert_error(r, 400, "bad_request", "none")
    for body in [b"nope", {"rawData": "x"}, {"rawData": 1, "signature": "ab"},
                 {"signature": "ab"}]:
        r = post_json(s.port, "/v1/check-signature", _body(body), headers=auth(token))
        assert_error(r, 400, "bad_request", "none")
    assert stats(mock) == before, "a 400 must make no WeChat call"
    # and the store is still the one failing (nothing else changed): a good request is 503
    assert_error(decrypt(s.port, token, good), 503, "store_unavailable", "retry")


@pytest.mark.parametrize("hdr", [None, "Bearer", "Bearer wxl_" + "A" * 43, "Basic dXNlcjpwYXNz"],
                         ids=["none", "empty-bearer", "unknown", "basic"])
def test_userdata_routes_need_a_session_token(srv, user, mock, hdr):
    _, openid, sk = user
    headers = {"Content-Type": "application/json"}
    if hdr is not None:
        headers["Authorization"] = hdr
    before = stats(mock)
    assert_invalid_token(post_json(srv.port, "/v1/decrypt",
                                   json.dumps(sealed(sk, user_info(openid))), headers=headers))
    assert_invalid_token(post_json(srv.port, "/v1/check-signature",
                                   json.dumps({"rawData": "{}", "signature": sign("{}", sk)}),
                                   headers=headers))
    h = {k: v for k, v in headers.items() if k != "Content-Type"}
    assert_invalid_token(request(srv.port, "GET", "/v1/session/check", headers=h))
    assert stats(mock) == before, "an unauthenticated request must not reach WeChat"


def test_logged_out_token_cannot_decrypt(srv, user):
    token, openid, sk = user
    f = sealed(sk, user_info(openid))
    assert decrypt(srv.port, token, f).status == 200
    out = request(srv.port, "POST", "/v1/logout", headers={"Authorization": f"Bearer {token}"})
    assert out.status == 204, out
    assert_invalid_token(decrypt(srv.port, token, f))


# --------------------------------------------------------------------------
# the previous session_key inside session_key_grace
# --------------------------------------------------------------------------

def test_decrypt_with_previous_key_inside_grace(srv, mock):
    name = "udgrace" + os.urandom(3).hex()
    token1, openid = login(srv.port, name)
    key1 = mock_session_key(mock, openid)
    obj1 = user_info(openid, n=1)
    f1 = sealed(key1, obj1)                 # encrypted by the phone just before re-login
    token2, openid2 = login(srv.port, name)  # another code for the same user
    assert openid2 == openid
    key2 = mock_session_key(mock, openid)
    assert key2 != key1
    obj2 = user_info(openid, n=2)
    f2 = sealed(key2, obj2)
    for tok in (token1, token2):
        assert_decrypted(decrypt(srv.port, tok, f1), obj1)
        assert_decrypted(decrypt(srv.port, tok, f2), obj2)
    # a watermark check applies to data opened with the previous key too
    assert_watermark_mismatch(decrypt(srv.port, token2, sealed(key1, user_info(openid,
                                                                               OTHER_APPID))))


def test_only_the_one_previous_key_is_kept(srv, mock):
    """After two re-logins, the key of the first login is neither current nor previous."""
    name = "udthird" + os.urandom(3).hex()
    token, openid = login(srv.port, name)
    key1 = mock_session_key(mock, openid)
    login(srv.port, name)
    key2 = mock_session_key(mock, openid)
    login(srv.port, name)
    key3 = mock_session_key(mock, openid)
    assert len({key1, key2, key3}) == 3
    obj = user_info(openid)
    assert_decrypted(decrypt(srv.port, token, sealed(key3, obj)), obj)
    assert_decrypted(decrypt(srv.port, token, sealed(key2, obj)), obj)
    assert_decrypt_failed(decrypt(srv.port, token, sealed(key1, obj)))
    raw = json.dumps({"nickName": "n"})
    assert valid_of(check_signature(srv.port, token, raw, sign(raw, key2))) is True
    assert valid_of(check_signature(srv.port, token, raw, sign(raw, key1))) is False


def test_replayed_code_does_not_replace_the_previous_key(srv, mock):
    """A repeat of the newest code (double tap, retry) is answered from the first exchange;
    it must not push the real previous key out of the grace slot."""
    name = "udreplay" + os.urandom(3).hex()
    token, openid = login(srv.port, name)
    key1 = mock_session_key(mock, openid)
    code2 = new_code(name)
    assert post_json(srv.port, "/v1/login", {"code": code2}).status == 200
    assert post_json(srv.port, "/v1/login", {"code": code2}).status == 200
    assert post_json(srv.port, "/openid", {"code": code2}).status == 200
    obj = user_info(openid)
    assert_decrypted(decrypt(srv.port, token, sealed(key1, obj)), obj)


def test_previous_key_refused_after_grace(procs, mock):
    s = procs.serve(mock=mock, env={"WXLOGIN_SESSION_KEY_GRACE": "1"})
    name = "udexp" + os.urandom(3).hex()
    token, openid = login(s.port, name)
    key1 = mock_session_key(mock, openid)
    obj = user_info(openid)
    f1 = sealed(key1, obj)
    raw = json.dumps({"nickName": "n", "ts": 1})
    sig1 = sign(raw, key1)
    login(s.port, name)
    key2 = mock_session_key(mock, openid)
    assert key2 != key1
    # inside the (1 s) window it still opens
    assert_decrypted(decrypt(s.port, token, f1), obj)
    assert valid_of(check_signature(s.port, token, raw, sig1)) is True
    time.sleep(2.5)
    assert_decrypt_failed(decrypt(s.port, token, f1))
    assert valid_of(check_signature(s.port, token, raw, sig1)) is False
    # the current key is unaffected
    assert_decrypted(decrypt(s.port, token, sealed(key2, obj)), obj)
    assert valid_of(check_signature(s.port, token, raw, sign(raw, key2))) is True


def test_grace_zero_keeps_no_previous_key(procs, mock):
    s = procs.serve(mock=mock, env={"WXLOGIN_SESSION_KEY_GRACE": "0"})
    name = "udzero" + os.urandom(3).hex()
    token, openid = login(s.port, name)
    key1 = mock_session_key(mock, openid)
    obj = user_info(openid)
    f1 = sealed(key1, obj)
    login(s.port, name)
    # replaced_at is in whole seconds: wait until the replacement is strictly in the past
    time.sleep(1.1)
    assert_decrypt_failed(decrypt(s.port, token, f1))


# --------------------------------------------------------------------------
# POST /v1/check-signature
# --------------------------------------------------------------------------

RAW = json.dumps({"nickName": "Band", "gender": 1, "language": "zh_CN", "city": "广州",
                  "province": "Guangdong", "country": "CN",
                  "avatarUrl": "http://wx.qlogo.cn/mmopen/vi_32/1vZvI39NWFQ9XM4LtQpFrQJ1xlgZxx3w"},
                 ensure_ascii=False)


def test_check_signature_valid(srv, user):
    token, _, sk = user
    assert valid_of(check_signature(srv.port, token, RAW, sign(RAW, sk))) is True
    assert valid_of(check_signature(srv.port, token, "", sign("", sk))) is True


def test_check_signature_uppercase_hex_accepted(srv, user):
    token, _, sk = user
    sig = sign(RAW, sk)
    assert any(c in "abcdef" for c in sig)
    assert valid_of(check_signature(srv.port, token, RAW, sig.upper())) is True
    mixed = "".join(c.upper() if i % 2 else c for i, c in enumerate(sig))
    assert valid_of(check_signature(srv.port, token, RAW, mixed)) is True


def test_check_signature_invalid(srv, user):
    token, _, sk = user
    good = sign(RAW, sk)
    flipped = good[:-1] + ("0" if good[-1] != "0" else "1")
    cases = [
        sign(RAW + " ", sk),                                        # other rawData
        hashlib.sha1((sk + RAW).encode()).hexdigest(),              # key first
        hashlib.sha1(RAW.encode()).hexdigest(),                     # no key
        hashlib.sha1(RAW.encode() + base64.b64decode(sk)).hexdigest(),  # decoded key
        sign(RAW, base64.b64encode(os.urandom(16)).decode()),       # another key
        flipped,
        good[:-1],                                                  # 39 characters
        good + "0",                                                 # 41 characters
        good[:-2] + "zz",                                           # not hex
        "",
        hashlib.sha256(RAW.encode() + sk.encode()).hexdigest(),     # SHA-256, 64 chars
    ]
    for sig in cases:
        assert valid_of(check_signature(srv.port, token, RAW, sig)) is False, sig
    assert valid_of(check_signature(srv.port, token, RAW, good)) is True


def test_check_signature_previous_key_in_grace(srv, mock):
    name = "udsig" + os.urandom(3).hex()
    token, openid = login(srv.port, name)
    key1 = mock_session_key(mock, openid)
    login(srv.port, name)
    key2 = mock_session_key(mock, openid)
    assert key1 != key2
    assert valid_of(check_signature(srv.port, token, RAW, sign(RAW, key1))) is True
    assert valid_of(check_signature(srv.port, token, RAW, sign(RAW, key2))) is True
    assert valid_of(check_signature(srv.port, token, RAW, sign(RAW + "x", key1))) is False


@pytest.mark.parametrize("body", [
    b"not json", b"[]", {"rawData": RAW}, {"signature": "ab" * 20},
    {"rawData": {"a": 1}, "signature": "ab" * 20}, {"rawData": RAW, "signature": 5},
    {"rawData": RAW, "signature": None},
], ids=["not-json", "array", "no-signature", "no-rawData", "rawData-object", "sig-number",
        "sig-null"])
def test_check_signature_bad_request(srv, user, body):
    token, _, _ = user
    r = post_json(srv.port, "/v1/check-signature", _body(body), headers=auth(token))
    assert_error(r, 400, "bad_request", "none")


# --------------------------------------------------------------------------
# GET /v1/session/check
# --------------------------------------------------------------------------

def test_session_check_true_then_false_after_rotation_at_wechat(srv, mock):
    name = "udcheck" + os.urandom(3).hex()
    token, openid = login(srv.port, name)
    before = stats(mock)["checksession"]["requests"]
    assert valid_of(session_check(srv.port, token)) is True
    assert stats(mock)["checksession"]["requests"] == before + 1, "asks WeChat each time"

    rotate_at_mock(mock, name)          # WeChat's key changes behind wxlogin's back
    assert valid_of(session_check(srv.port, token)) is False
    assert valid_of(session_check(srv.port, token)) is False

    token2, _ = login(srv.port, name)   # a new login through wxlogin stores the new key
    assert valid_of(session_check(srv.port, token2)) is True
    assert valid_of(session_check(srv.port, token)) is True, "the key is the user's, not the token's"


def test_session_check_uses_one_cached_access_token(srv, user, mock):
    token, _, _ = user
    assert valid_of(session_check(srv.port, token)) is True
    before = stats(mock)
    for _ in range(3):
        assert valid_of(session_check(srv.port, token)) is True
    after = stats(mock)
    assert after["stable_token"]["requests"] == before["stable_token"]["requests"]
    assert after["token"]["requests"] == before["token"]["requests"]
    assert after["checksession"]["requests"] == before["checksession"]["requests"] + 3
