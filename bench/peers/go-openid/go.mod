module wxlogin/bench/peers/go-openid

go 1.19
