# Example config file: arbiter -c deploy/arbiter.conf.py main:app
# Module-level names are settings (CLI flags and ARBITER_* env vars still win).
bind = ["127.0.0.1:8000"]
workers = 4
timeout = 30
graceful_timeout = 30
max_requests = 10000
max_requests_jitter = 1000
access_log = True
