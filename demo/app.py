"""A tiny web app for the local cluster (scripts/run.sh): one per node, behind its litefs-rs proxy.

GET /      lists the messages in the database (newest first) and says which node answered.
POST /     stores the request body as a message (the proxy sends it to the primary).

Usage: python3 demo/app.py DB_PATH PORT NODE_NAME
"""

import http.server
import sqlite3
import sys

DB, PORT, NAME = sys.argv[1], int(sys.argv[2]), sys.argv[3]


class Handler(http.server.BaseHTTPRequestHandler):
    def reply(self, code, text):
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        try:
            # Read-only: a replica must not create the file before the primary does.
            db = sqlite3.connect(f"file:{DB}?mode=ro", uri=True)
            rows = db.execute("SELECT id, body FROM messages ORDER BY id DESC LIMIT 20").fetchall()
            db.close()
        except sqlite3.OperationalError:
            rows = []  # no message yet
        lines = [f"{NAME} answered: {len(rows)} message(s)"]
        lines += [f"  #{i}: {b}" for i, b in rows]
        self.reply(200, "\n".join(lines) + "\n")

    def do_POST(self):
        text = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode(errors="replace")
        try:
            db = sqlite3.connect(DB, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, body TEXT)")
            cur = db.execute("INSERT INTO messages (body) VALUES (?)", (text,))
            db.close()
        except sqlite3.Error as e:
            self.reply(500, f"{NAME}: {e}\n")
            return
        self.reply(201, f"{NAME} stored message #{cur.lastrowid}\n")

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
