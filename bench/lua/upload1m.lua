-- POST a 1 MiB body on every request (streamed to the app in pieces by the server).
wrk.method = "POST"
wrk.body = string.rep("a", 1048576)
wrk.headers["Content-Type"] = "application/octet-stream"
