#!/usr/bin/env bash
# Prints "ok" when the server on 127.0.0.1:PORT gives the document answers (status, JSON content
# type, body); otherwise what differs, with exit status 1.
# usage: check-docs.sh PORT
set -euo pipefail
port=$1 status=0
expect() { # PATH STATUS BODY_PART
  local got code type body
  got=$(curl -s -m 5 -w '\n%{http_code} %{content_type}' "http://127.0.0.1:$port$1" || true)
  body=${got%$'\n'*} code=${got##*$'\n'}
  type=${code#* } code=${code%% *}
  if [ "$code" != "$2" ] || [[ $type != application/json* ]] || [[ $body != *"$3"* ]]; then
    echo "differs on $1: $code $type $body"
    status=1
  fi
}
expect /docs/example 200 '"docName":"example","content":"'
expect /docs/nope 404 '{"error":"Document not found"}'
expect /health 200 ''
[ $status -eq 0 ] && echo ok
exit $status
