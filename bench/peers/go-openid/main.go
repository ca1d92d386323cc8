// Command openidpeer is the Go peer of wxlogin's POST /openid in bench/run.py: the plain
// net/http way to do it, for comparison. For {"code": "..."} it asks WeChat's code2Session
// (GET /sns/jscode2session, here wxlogin's mock) and answers {"openid": "..."}. Nothing else:
// no store, no retries, no per-request log.
//
//	openidpeer -listen 127.0.0.1:0 -wechat-base http://127.0.0.1:PORT -appid APPID -secret SECRET
//
// The first line on stderr is the address it listens on (port 0 picks a free one).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"
)

// upstream is one shared client for every request: its Transport keeps up to 1024 idle
// keep-alive connections to WeChat (Go's default is 2 per host, which would make most
// requests dial a new connection under load).
var upstream = &http.Client{
	Transport: &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          4096,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       25 * time.Second,
		ResponseHeaderTimeout: 5 * time.Second,
	},
	Timeout: 5 * time.Second, // the whole call, body included (wxlogin's upstream_timeout_ms)
}

var base, appid, secret string

func reply(w http.ResponseWriter, status int, body map[string]string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}

func openid(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		reply(w, http.StatusMethodNotAllowed, map[string]string{"error": "method_not_allowed"})
		return
	}
	var req struct {
		Code string `json:"code"`
	}
	body := http.MaxBytesReader(w, r.Body, 64<<10) // wxlogin's default max_body_bytes
	if err := json.NewDecoder(body).Decode(&req); err != nil || req.Code == "" {
		reply(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
		return
	}
	resp, err := upstream.Get(base + "/sns/jscode2session?appid=" + url.QueryEscape(appid) +
		"&secret=" + url.QueryEscape(secret) + "&js_code=" + url.QueryEscape(req.Code) +
		"&grant_type=authorization_code")
	if err != nil {
		reply(w, http.StatusBadGateway, map[string]string{"error": "upstream_unavailable"})
		return
	}
	var ans struct {
		OpenID  string `json:"openid"`
		ErrCode int    `json:"errcode"`
	}
	err = json.NewDecoder(resp.Body).Decode(&ans)
	io.Copy(io.Discard, resp.Body) // read to the end, or the connection is not reused
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || ans.ErrCode != 0 || ans.OpenID == "" {
		reply(w, http.StatusBadGateway, map[string]string{"error": "upstream_error"})
		return
	}
	reply(w, http.StatusOK, map[string]string{"openid": ans.OpenID})
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "host:port to listen on (port 0: any free port)")
	flag.StringVar(&base, "wechat-base", "https://api.weixin.qq.com", "WeChat's API base URL")
	flag.StringVar(&appid, "appid", "", "the Mini Program's AppID")
	flag.StringVar(&secret, "secret", "", "its AppSecret")
	flag.Parse()
	if appid == "" || secret == "" {
		log.Fatal("openidpeer: -appid and -secret are required")
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintln(os.Stderr, ln.Addr()) // first line: run.py reads the port from it
	mux := http.NewServeMux()
	mux.HandleFunc("/openid", openid)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 30 * time.Second}
	log.Fatal(srv.Serve(ln))
}
