# Starting and finding `auris serve` and other loopback servers in the check scripts (sourced,
# not run).
#
# free_port: prints a free TCP port on 127.0.0.1.
# serve_address LOG PID: waits up to 60 s for the `auris serve --port 0` of process PID to print
#   its address in LOG and answer GET /ready, then prints the address; returns 1 (after
#   printing LOG to stderr) when PID exits first or the time runs out.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

serve_address() {
  local log="$1" pid="$2" addr=""
  for _ in $(seq 600); do
    addr="$(grep -o 'http://[0-9.:]*' "$log" | head -n1 || true)"
    if [[ -n "$addr" ]] && curl -sf "$addr/ready" >/dev/null; then
      echo "$addr"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$log" >&2
  return 1
}
