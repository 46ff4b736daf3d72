"""A recording stand-in for kube-apiserver, just enough for `kubectl apply --validate=false`
on Secrets: discovery, GET of a Secret from STATE_DIR/<name>.json (404 when absent), and
POST/PATCH recorded to STATE_DIR/requests.jsonl and answered with the object.

Usage: python3 kubectl_recorder.py STATE_DIR  (writes STATE_DIR/port when listening)
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATE = sys.argv[1]
PREFIX = "/api/v1/namespaces/default/secrets"

DISCOVERY = {
    "/api": {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}
        ],
    },
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
    "/api/v1": {
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            {
                "name": "secrets",
                "singularName": "secret",
                "namespaced": True,
                "kind": "Secret",
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            }
        ],
    },
}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def not_found(self):
        self.reply(404, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                         "status": "Failure", "reason": "NotFound", "code": 404,
                         "message": "not found"})

    def live(self):
        name = self.path.split("?")[0][len(PREFIX) + 1:]
        path = os.path.join(STATE, name + ".json")
        if "/" in name or not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

    def record(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode()
        with open(os.path.join(STATE, "requests.jsonl"), "a") as f:
            f.write(json.dumps({"method": self.command, "path": self.path,
                                "contentType": self.headers.get("Content-Type"),
                                "body": body}) + "\n")
        return body

    def do_GET(self):
        path = self.path.split("?")[0]
        if path in DISCOVERY:
            return self.reply(200, DISCOVERY[path])
        if path.startswith(PREFIX + "/"):
            obj = self.live()
            return self.reply(200, obj) if obj else self.not_found()
        self.not_found()

    def do_POST(self):
        body = self.record()
        self.reply(201, json.loads(body))

    def do_PATCH(self):
        self.record()
        obj = self.live()
        return self.reply(200, obj) if obj else self.not_found()


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(os.path.join(STATE, "port.tmp"), "w") as f:
    f.write(str(server.server_address[1]))
os.rename(os.path.join(STATE, "port.tmp"), os.path.join(STATE, "port"))
server.serve_forever()
