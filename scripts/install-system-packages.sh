#!/usr/bin/env bash
# What the test suite and the benchmarks need from the machine:
# - Debian packages docker-compose (to validate docker-compose.yml without an engine), wrk
#   (HTTP load), and chromium, chromium-driver and fonts-noto-cjk (the dashboard's browser test:
#   headless Chromium driven through /usr/bin/chromedriver, Chinese glyphs that are not boxes),
#   installed when run as root with apt-get; otherwise it says what to install and fails;
# - on a RabbitMQ running on this machine, the management plugin: the tests make a vhost per run
#   and `closeloop bus declare` sets policies through its API (rabbitmqctl works too, but starts
#   an Erlang VM per call: about a second each).
set -euo pipefail
need=()
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
dpkg-query -W -f='${Status}' fonts-noto-cjk 2>/dev/null | grep -q "ok installed" || need+=(fonts-noto-cjk)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${need[*]} (Debian packages)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${need[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "${need[@]}" >/dev/null; }
  else
    echo "missing: ${need[*]}. Install them (Debian/Ubuntu: sudo apt-get install ${need[*]}) and run again." >&2
    exit 1
  fi
fi
# Only for a broker on this machine that we may administer; a remote one is its operator's.
if [ -z "${AMQP_URI:-}" ] && [ "$(id -u)" = 0 ] && command -v rabbitmq-plugins >/dev/null 2>&1 \
   && ! curl -s -o /dev/null -m 2 http://127.0.0.1:15672/ 2>/dev/null; then
  if rabbitmqctl -q status >/dev/null 2>&1; then
    echo "enabling the RabbitMQ management plugin on the local broker" >&2
    rabbitmq-plugins enable --quiet rabbitmq_management >/dev/null
    for _ in $(seq 1 30); do curl -s -o /dev/null -m 2 http://127.0.0.1:15672/ && break; sleep 1; done
  fi
fi
exit 0
