#!/usr/bin/env python3
"""core.http_request: send one HTTP request, print the response as JSON.

Parameters arrive as JSON on stdin, or in the file named by ATTUNE_PARAMETER_FILE.
Exit status: 0 for any HTTP response (the status is in the output),
1 when no response was received, 2 for invalid parameters.
"""
import base64
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

MAX_BODY = 1024 * 1024


def read_parameters():
    path = os.environ.get("ATTUNE_PARAMETER_FILE")
    raw = open(path, encoding="utf-8").read() if path else sys.stdin.read()
    return json.loads(raw) if raw.strip() else {}


def origin(url):
    parts = urllib.parse.urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return (parts.scheme, (parts.hostname or "").lower(), parts.port or default)


class CredentialsStayWithTheirOrigin(urllib.request.HTTPRedirectHandler):
    """Follows redirects (at most `max_redirections`, none when 0), but sends
    credentials only to the origin they were given for.

    urllib's own handler copies every header to wherever a redirect points, so
    an `auth_token` would reach any host the server names.
    """

    SENSITIVE = ("authorization", "proxy-authorization", "cookie")

    def __init__(self, max_redirections=10):
        super().__init__()
        self.max_redirections = max_redirections

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if self.max_redirections <= 0:
            return None  # the 3xx answer itself is the response
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and origin(req.full_url) != origin(new.full_url):
            for name in list(new.headers):
                if name.lower() in self.SENSITIVE:
                    del new.headers[name]
        return new


def fail(code, message, **extra):
    print(json.dumps({"error": message, **extra}))
    sys.exit(code)


def main():
    try:
        params = read_parameters()
    except (OSError, ValueError) as e:
        fail(2, f"cannot read parameters: {e}")
    url = params.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        fail(2, "parameter `url` must be an absolute http:// or https:// URL", url=url)
    method = str(params.get("method") or "GET").upper()
    headers = dict(params.get("headers") or {})
    query = params.get("query_params") or {}
    if query:
        separator = "&" if urllib.parse.urlsplit(url).query else "?"
        url = url + separator + urllib.parse.urlencode({k: str(v) for k, v in query.items()})
    data = None
    if params.get("json_body") is not None:
        data = json.dumps(params["json_body"]).encode()
        headers.setdefault("Content-Type", "application/json")
    elif params.get("body") is not None:
        data = str(params["body"]).encode()
    auth_type = params.get("auth_type") or ("bearer" if params.get("auth_token") else "basic" if params.get("auth_username") else "none")
    if auth_type == "bearer" and params.get("auth_token"):
        headers["Authorization"] = f"Bearer {params['auth_token']}"
    elif auth_type == "basic" and params.get("auth_username") is not None:
        pair = f"{params['auth_username']}:{params.get('auth_password') or ''}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    context = None
    if params.get("verify_ssl") is False:
        context = ssl._create_unverified_context()  # noqa: S323 - asked for by the caller
    max_redirects = int(params.get("max_redirects", 10)) if params.get("follow_redirects", True) else 0
    opener = urllib.request.build_opener(
        CredentialsStayWithTheirOrigin(max_redirects), urllib.request.HTTPSHandler(context=context)
    )
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    started = time.monotonic()
    try:
        response = opener.open(request, timeout=float(params.get("timeout") or 30))
    except urllib.error.HTTPError as e:
        response = e
    except (urllib.error.URLError, OSError, ValueError) as e:
        fail(1, f"request failed: {getattr(e, 'reason', e)}", url=url)
    body = response.read(MAX_BODY + 1)
    truncated = len(body) > MAX_BODY
    text = body[:MAX_BODY].decode("utf-8", errors="replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    status = response.status if hasattr(response, "status") else response.code
    print(json.dumps({
        "url": response.geturl() or url,
        "status_code": status,
        "headers": dict(response.headers.items()),
        "body": text,
        "json": parsed,
        "success": 200 <= status < 300,
        "truncated": truncated,
        "elapsed_ms": int((time.monotonic() - started) * 1000),
    }))


if __name__ == "__main__":
    main()
