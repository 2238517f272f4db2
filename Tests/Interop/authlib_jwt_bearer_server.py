"""A token endpoint built on Authlib's RFC 7523 JWT-bearer grant, for tokend's interop test.

Usage: authlib_jwt_bearer_server.py ISSUER PUBLIC_KEY_PEM_FILE AUDIENCE ACCEPTED_LOG [SECONDS]

Listens on 127.0.0.1 (a free port, printed as "port N" on stdout), verifies each assertion with Authlib's
JWTBearerGrant (signature with the issuer's public key, iss/aud/exp essential, aud equal to AUDIENCE), refuses a jti it
has already accepted, answers a token that lives 3 seconds, and appends "jti iat exp" of each accepted assertion to
ACCEPTED_LOG. It exits after SECONDS (default 120) so that a test that dies cannot leave it running.
"""

import json
import os
import secrets
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qsl

# A test runner may have left SIGTERM ignored or blocked; the test stops this endpoint with it.
signal.signal(signal.SIGTERM, signal.SIG_DFL)
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})

# Loopback only: Authlib refuses http:// unless told that this is a test.
os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"

from authlib.oauth2.rfc6749 import AuthorizationServer, InvalidGrantError, OAuth2Request  # noqa: E402
from authlib.oauth2.rfc7523 import JWTBearerGrant  # noqa: E402

ISSUER, PUBLIC_KEY_FILE, AUDIENCE, ACCEPTED_LOG = sys.argv[1:5]
LIFETIME = int(sys.argv[5]) if len(sys.argv) > 5 else 120
with open(PUBLIC_KEY_FILE, "rb") as handle:
    PUBLIC_KEY = handle.read()
SEEN_JTIS = set()
LOCK = threading.Lock()


class Client:
    client_id = ISSUER

    def check_grant_type(self, grant_type):
        return grant_type == JWTBearerGrant.GRANT_TYPE


class Grant(JWTBearerGrant):
    CLAIMS_OPTIONS = {
        "iss": {"essential": True, "value": ISSUER},
        "aud": {"essential": True, "value": AUDIENCE},
        "exp": {"essential": True},
        "jti": {"essential": True},
    }

    def process_assertion_claims(self, assertion):
        claims = super().process_assertion_claims(assertion)
        with LOCK:
            if claims["jti"] in SEEN_JTIS:
                raise InvalidGrantError(description="assertion replayed (jti seen before)")
            SEEN_JTIS.add(claims["jti"])
        with open(ACCEPTED_LOG, "a") as log:
            log.write(f"{claims['jti']} {claims.get('iat')} {claims['exp']}\n")
        return claims

    def resolve_issuer_client(self, issuer):
        return Client() if issuer == ISSUER else None

    def resolve_client_key(self, client, headers, payload):
        if client is None:
            raise InvalidGrantError(description="unknown issuer")
        return PUBLIC_KEY

    def authenticate_user(self, subject):
        return None

    def has_granted_permission(self, client, user):
        return False


class Server(AuthorizationServer):
    def __init__(self):
        super().__init__()
        self.register_grant(Grant)
        self.register_token_generator(
            "default",
            lambda **_: {"access_token": "authlib-" + secrets.token_urlsafe(24), "token_type": "Bearer", "expires_in": 3},
        )

    def query_client(self, client_id):
        return Client() if client_id == ISSUER else None

    def save_token(self, token, request):
        pass

    def send_signal(self, name, *args, **kwargs):
        pass

    def create_oauth2_request(self, request):
        return request

    def handle_response(self, status, body, headers):
        return status, body, headers


SERVER = Server()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        form = dict(parse_qsl(self.rfile.read(length).decode("utf-8"), keep_blank_values=True))
        request = OAuth2Request("POST", f"http://127.0.0.1{self.path}", form, dict(self.headers))
        status, body, headers = SERVER.create_token_response(request)
        payload = json.dumps(body).encode("utf-8")
        self.send_response(status)
        for name, value in headers:
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format, *args):
        sys.stderr.write("authlib-endpoint: " + (format % args) + "\n")


def main():
    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    print(f"port {httpd.server_address[1]}", flush=True)
    threading.Timer(LIFETIME, lambda: os._exit(0)).start()
    httpd.serve_forever()


if __name__ == "__main__":
    main()
