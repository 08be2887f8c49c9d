//! The HTTP proxy in front of the application: a real Python web app behind each node's proxy,
//! real requests with curl. Writes to a replica get `fly-replay`, writes to the primary set the
//! `__txid` cookie, a read with the cookie waits for the replica to catch up, health follows the
//! replication lag, a write with no primary anywhere gets 503, an application that is down gets
//! a prompt 502, and a WebSocket echoes through the proxy (a handshake and frames built here).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::cluster::{sql, wait_caught_up, CATCH_UP};
use support::consul::Consul;
use support::mount::{free_port, MountedNode, NodeOptions, Rng, Role};

/// A small web app: `GET` answers the row count of `t` in the database, `POST` inserts its body
/// as a row (201 `created`, header `X-App: yes`; `POST /both` also into `other.db` beside it). `GET /websocket` is a WebSocket echo (RFC
/// 6455: it logs `WEBSOCKET <accept>` and sends every frame back unmasked). Every request is
/// logged to a file.
const APP: &str = r#"
import base64, hashlib, http.server, os, sqlite3, struct, sys, time
db, log, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
class H(http.server.BaseHTTPRequestHandler):
    def websocket(self):
        # RFC 6455: answer the handshake, then echo every frame back, unmasked.
        key = self.headers.get("Sec-WebSocket-Key")
        if (self.headers.get("Upgrade") or "").lower() != "websocket" or not key:
            self.reply(400, b"not a WebSocket handshake")
            return
        digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        accept = base64.b64encode(digest).decode()
        with open(log, "a") as f: f.write("WEBSOCKET %s\n" % accept)
        self.wfile.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % accept).encode())
        self.wfile.flush()
        self.close_connection = True
        while True:
            head = self.rfile.read(2)
            if len(head) < 2 or not head[1] & 0x80:
                return  # gone, or an unmasked client frame (a protocol error)
            first, n = head[0], head[1] & 0x7F
            if n == 126:
                n = struct.unpack("!H", self.rfile.read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4)
            data = self.rfile.read(n)
            if len(data) < n:
                return
            keys = (mask * (n // 4 + 1))[:n]
            payload = (int.from_bytes(data, "big") ^ int.from_bytes(keys, "big")).to_bytes(n, "big")
            opcode = first & 0x0F
            if opcode == 9:
                first = 0x80 | 10  # ping: pong
            if n < 126:
                out = bytes([first, n])
            elif n < 65536:
                out = bytes([first, 126]) + struct.pack("!H", n)
            else:
                out = bytes([first, 127]) + struct.pack("!Q", n)
            self.wfile.write(out + payload)
            self.wfile.flush()
            if opcode == 8:
                return  # close: answered, and the connection ends
    def reply(self, code, body):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-App", "yes")
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        with open(log, "a") as f: f.write("GET %s\n" % self.path)
        if self.path == "/events":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for i in range(2):
                self.wfile.write(b"data: %d\n\n" % i)
                self.wfile.flush()
                time.sleep(1)
            return
        if self.path == "/websocket":
            self.websocket()
            return
        if self.path == "/ws":
            self.wfile.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
            self.wfile.flush()
            while True:
                data = self.connection.recv(65536)
                if not data:
                    break
                self.connection.sendall(data)
            self.close_connection = True
            return
        c = sqlite3.connect(db)
        n = c.execute("SELECT count(*) FROM t").fetchone()[0]
        c.close()
        self.reply(200, str(n).encode())
    def do_POST(self):
        with open(log, "a") as f: f.write("POST %s %s\n" % (self.path, self.headers.get("X-Forwarded-For")))
        if self.path == "/upload":
            left, n = int(self.headers.get("Content-Length") or 0), 0
            while left > 0:
                chunk = self.rfile.read(min(left, 1 << 20))
                if not chunk:
                    break
                n += len(chunk)
                left -= len(chunk)
            self.reply(200, str(n).encode())
            return
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        c = sqlite3.connect(db, isolation_level=None)
        c.execute("INSERT INTO t VALUES (?)", (data,))
        c.close()
        if self.path == "/both":
            c = sqlite3.connect(os.path.join(os.path.dirname(db), "other.db"), isolation_level=None)
            c.execute("INSERT INTO t VALUES (?)", (data,))
            c.close()
        self.reply(201, b"created")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

/// A running app, killed when dropped.
struct App {
    child: Child,
    log: std::path::PathBuf,
}

impl App {
    fn start(node: &MountedNode, port: u16) -> App {
        let log = node.root().join("app.log");
        std::fs::write(&log, "").unwrap();
        let child = Command::new("python3")
            .arg("-c")
            .arg(APP)
            .arg(node.db_path("db"))
            .arg(&log)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .spawn()
            .expect("start the app");
        App { child, log }
    }

    fn requests(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What curl got: status, headers (lower-case names), body.
struct Got {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn curl(args: &[&str]) -> Got {
    let out = Command::new("curl")
        .args(["-s", "-m", "20", "-D", "-"])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Got {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Waits until the proxy on `port` answers its health check.
fn wait_proxy(port: u16, node: &MountedNode) {
    let until = Instant::now() + CATCH_UP;
    while curl(&[&format!("http://127.0.0.1:{port}/litefs/health")]).status != 200 {
        assert!(
            Instant::now() < until,
            "proxy on {port} never answered\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn with_proxy(role: Role) -> (NodeOptions, u16, u16) {
    let (proxy, app) = (free_port(), free_port());
    (
        NodeOptions {
            role,
            proxy: Some((proxy, app)),
            ..NodeOptions::default()
        },
        proxy,
        app,
    )
}

/// A primary and a replica with table `t` in `db` (journal mode `mode`), each with its app
/// behind its proxy, both proxies serving.
struct Pair {
    primary: MountedNode,
    replica: MountedNode,
    /// The primary's proxy port.
    pp: u16,
    /// The replica's proxy port.
    rp: u16,
    primary_app: App,
    replica_app: App,
}

impl Pair {
    fn start(mode: Option<&str>) -> Pair {
        let (opts, pp, pa) = with_proxy(Role::Primary);
        let primary = MountedNode::start_with(opts);
        let (opts, rp, ra) = with_proxy(Role::Replica(primary.port()));
        let replica = MountedNode::start_with(opts);
        sql(&primary, "db", mode, "CREATE TABLE t (v);");
        wait_caught_up(&primary, &[&replica], "db");
        let primary_app = App::start(&primary, pa);
        let replica_app = App::start(&replica, ra);
        wait_proxy(pp, &primary);
        wait_proxy(rp, &replica);
        Pair {
            primary,
            replica,
            pp,
            rp,
            primary_app,
            replica_app,
        }
    }
}

#[test]
fn writes_go_to_the_primary_and_a_client_reads_its_own_writes_on_a_replica() {
    let pair = Pair::start(Some("wal"));
    let (primary, replica, pp, rp) = (&pair.primary, &pair.replica, pair.pp, pair.rp);
    let (primary_app, replica_app) = (&pair.primary_app, &pair.replica_app);

    // A write on the replica's proxy: replayed on the primary by Fly.io's edge, never handed to
    // the replica's app.
    let got = curl(&[
        "-X",
        "POST",
        "-d",
        "x",
        &format!("http://127.0.0.1:{rp}/items"),
    ]);
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(
        got.header("fly-replay"),
        Some(format!("instance=primary-{}", primary.port()).as_str())
    );
    assert!(
        !replica_app.requests().contains("POST"),
        "{}",
        replica_app.requests()
    );

    // On the primary: the app answers, and the response carries the transaction id.
    let got = curl(&[
        "-X",
        "POST",
        "-d",
        "x",
        &format!("http://127.0.0.1:{pp}/items"),
    ]);
    assert_eq!((got.status, got.body.as_str()), (201, "created"));
    assert_eq!(got.header("x-app"), Some("yes"));
    let cookie = got
        .header("set-cookie")
        .expect("a __txid cookie")
        .to_owned();
    let txid = primary.txid("db");
    assert!(
        cookie.starts_with(&format!("__txid={txid:016x};")) && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    assert!(primary_app.requests().contains("POST /items 127.0.0.1"));

    // Hold the replica back with a read transaction, write again, and read with the new cookie
    // on the replica: the read waits until the replica has the write.
    let mut reader = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('BEGIN')\n\
             c.execute('SELECT count(*) FROM t').fetchone()\n\
             print('in', flush=True)\n\
             sys.stdin.readline()\n\
             c.execute('COMMIT')\n",
        )
        .arg(replica.db_path("db"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = support::mount::line_channel(&mut reader);
    assert_eq!(lines.recv_timeout(CATCH_UP).unwrap(), "in");
    let got = curl(&[
        "-X",
        "POST",
        "-d",
        "y",
        &format!("http://127.0.0.1:{pp}/items"),
    ]);
    let cookie = got
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let url = format!("http://127.0.0.1:{rp}/items");
    let read = std::thread::spawn(move || {
        let started = Instant::now();
        let got = curl(&["-b", &cookie, &url]);
        (got.status, got.body, started.elapsed())
    });
    // The replica has received the write and holds it back for the reader; the read waits.
    support::cluster::wait_metric(replica, "litefs_replica_queued_count 1");
    let hold = Duration::from_millis(300);
    std::thread::sleep(hold);
    assert!(!read.is_finished(), "the read did not wait for the replica");
    reader.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    assert!(reader.wait().unwrap().success());
    let (status, body, took) = read.join().unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "2"),
        "the read saw the replica before the write"
    );
    assert!(took >= hold, "the read did not wait: {took:?}");
    // (The pause above only gives a read that does not wait the time to come back.)

    // A cookie the replica never reaches: 504 after the wait.
    let got = curl(&[
        "-b",
        "__txid=00000000000fffff",
        &format!("http://127.0.0.1:{rp}/items"),
    ]);
    assert_eq!(got.status, 504);
    // Without a cookie, reads go straight to the local app.
    let got = curl(&[&format!("http://127.0.0.1:{rp}/items")]);
    assert_eq!((got.status, got.body.as_str()), (200, "2"));
}

/// A write that touches two databases sets a cookie naming both, and a read with it on a
/// replica waits for each.
#[test]
fn a_write_to_two_databases_sets_a_cookie_for_both() {
    let pair = Pair::start(None);
    let (primary, replica, pp, rp) = (&pair.primary, &pair.replica, pair.pp, pair.rp);
    sql(primary, "other.db", None, "CREATE TABLE t (v);");
    wait_caught_up(primary, &[replica], "other.db");
    let got = curl(&[
        "-X",
        "POST",
        "-d",
        "x",
        &format!("http://127.0.0.1:{pp}/both"),
    ]);
    assert_eq!(got.status, 201, "{}", got.body);
    let cookie = got.header("set-cookie").expect("a cookie").to_owned();
    let (db, other) = (primary.txid("db"), primary.txid("other.db"));
    assert!(
        cookie.starts_with(&format!("__txid=db:{db:016x}&other.db:{other:016x};")),
        "{cookie}"
    );
    let value = cookie.split(';').next().unwrap().to_owned();
    let got = curl(&["-b", &value, &format!("http://127.0.0.1:{rp}/items")]);
    assert_eq!((got.status, got.body.as_str()), (200, "1"));
    assert_eq!(replica.txid("other.db"), other);
    // The read waits for the second database too: one it never reaches gives 504.
    let far = format!("__txid=db:{db:016x}&other.db:00000000000fffff");
    let got = curl(&["-b", &far, &format!("http://127.0.0.1:{rp}/items")]);
    assert_eq!(got.status, 504);
    // A write to the tracked database alone gets LiteFS's cookie.
    let got = curl(&[
        "-X",
        "POST",
        "-d",
        "y",
        &format!("http://127.0.0.1:{pp}/items"),
    ]);
    let cookie = got.header("set-cookie").unwrap();
    assert!(
        cookie.starts_with(&format!("__txid={:016x};", primary.txid("db"))),
        "{cookie}"
    );
}

#[test]
fn health_follows_the_replication_lag() {
    let (opts, _pp, pa) = with_proxy(Role::Primary);
    let mut primary = MountedNode::start_with(opts);
    let (opts, rp, ra) = with_proxy(Role::Replica(primary.port()));
    let replica = MountedNode::start_with(opts);
    sql(&primary, "db", None, "CREATE TABLE t (v);");
    wait_caught_up(&primary, &[&replica], "db");
    let _apps = (App::start(&primary, pa), App::start(&replica, ra));
    wait_proxy(rp, &replica);
    // The primary goes away: its heartbeats stop, and past max-lag (1 s) the replica is unhealthy.
    primary.stop();
    let until = Instant::now() + CATCH_UP;
    loop {
        let got = curl(&[&format!("http://127.0.0.1:{rp}/litefs/health")]);
        if got.status == 503 {
            assert!(got.body.contains("lag"), "{}", got.body);
            break;
        }
        assert!(Instant::now() < until, "still healthy\n{}", replica.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_write_with_no_primary_anywhere_gets_503() {
    let consul = Consul::start();
    let (proxy, app) = (free_port(), free_port());
    let node = MountedNode::start_with(NodeOptions {
        role: Role::Consul {
            consul_port: consul.port(),
            candidate: false,
        },
        proxy: Some((proxy, app)),
        skip_sync: true,
        ..NodeOptions::default()
    });
    let url = format!("http://127.0.0.1:{proxy}/items");
    let until = Instant::now() + CATCH_UP;
    let got = loop {
        let got = curl(&["-X", "POST", "-d", "x", &url]);
        if got.status != 0 {
            break got;
        }
        assert!(Instant::now() < until, "no proxy\n{}", node.log());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(got.status, 503, "{}", got.body);
    assert!(got.body.contains("no primary"), "{}", got.body);
}

#[test]
fn big_uploads_event_streams_and_upgrades_pass_through() {
    let (opts, pp, pa) = with_proxy(Role::Primary);
    let primary = MountedNode::start_with(opts);
    sql(&primary, "db", None, "CREATE TABLE t (v);");
    let _app = App::start(&primary, pa);
    wait_proxy(pp, &primary);

    // 50 MB up, as a write through the primary's proxy.
    let file = primary.root().join("upload.bin");
    std::fs::write(&file, vec![7u8; 50 << 20]).unwrap();
    let got = curl(&[
        "-X",
        "POST",
        "-H",
        "Expect:",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("http://127.0.0.1:{pp}/upload"),
    ]);
    assert_eq!((got.status, got.body.as_str()), (200, "52428800"));

    // Server-sent events: the first event arrives while the app is still sending.
    let started = Instant::now();
    let mut sse = Command::new("curl")
        .args(["-s", "-N", &format!("http://127.0.0.1:{pp}/events")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = support::mount::line_channel(&mut sse);
    assert_eq!(lines.recv_timeout(CATCH_UP).unwrap(), "data: 0");
    let first = started.elapsed();
    assert_eq!(lines.recv_timeout(CATCH_UP).unwrap(), "");
    assert_eq!(lines.recv_timeout(CATCH_UP).unwrap(), "data: 1");
    let second = started.elapsed();
    assert!(sse.wait().unwrap().success());
    assert!(
        second - first >= Duration::from_millis(800),
        "the first event came with the second ({first:?}, {second:?}): not streamed"
    );

    // An upgrade: after 101 the connection carries raw bytes both ways.
    use std::io::{BufRead as _, Read as _};
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", pp)).unwrap();
    tcp.set_read_timeout(Some(CATCH_UP)).unwrap();
    tcp.write_all(b"GET /ws HTTP/1.1\r\nHost: app\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
        .unwrap();
    let mut reader = std::io::BufReader::new(tcp.try_clone().unwrap());
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    tcp.write_all(b"hello through the proxy").unwrap();
    let mut echo = [0u8; 23];
    reader.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"hello through the proxy");
}

#[test]
fn with_forward_a_replica_sends_writes_to_the_primary_and_streams_the_answer_back() {
    let consul = Consul::start();
    let node = |consul: &Consul| {
        let (proxy, app) = (free_port(), free_port());
        let n = MountedNode::start_with(NodeOptions {
            role: Role::Consul {
                consul_port: consul.port(),
                candidate: true,
            },
            proxy: Some((proxy, app)),
            proxy_forward: true,
            ..NodeOptions::default()
        });
        (n, proxy, app)
    };
    let (a, ap, aa) = node(&consul);
    let until = Instant::now() + CATCH_UP;
    while !curl(&[&format!("{}/info", a.url())])
        .body
        .contains("\"isPrimary\":true")
    {
        assert!(
            Instant::now() < until,
            "a never became primary\n{}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (b, bp, ba) = node(&consul);
    let until = Instant::now() + CATCH_UP;
    while std::fs::read_to_string(b.mnt().join(".primary")).is_err() {
        assert!(Instant::now() < until, "b does not follow a\n{}", b.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    sql(&a, "db", Some("wal"), "CREATE TABLE t (v);");
    wait_caught_up(&a, &[&b], "db");
    let a_app = App::start(&a, aa);
    let b_app = App::start(&b, ba);
    wait_proxy(ap, &a);
    wait_proxy(bp, &b);
    // The write goes to b's proxy, lands on a's app, and the client gets a's answer (with the
    // cookie a's proxy sets); b's app never sees it.
    let got = curl(&[
        "-X",
        "POST",
        "-d",
        "x",
        &format!("http://127.0.0.1:{bp}/items"),
    ]);
    assert_eq!(
        (got.status, got.body.as_str()),
        (201, "created"),
        "{}",
        b.log()
    );
    assert!(got.header("fly-replay").is_none());
    let cookie = got
        .header("set-cookie")
        .expect("the primary's cookie")
        .to_owned();
    assert!(
        a_app.requests().contains("POST /items"),
        "{}",
        a_app.requests()
    );
    assert!(!b_app.requests().contains("POST"), "{}", b_app.requests());
    // And the client reads its write back on b.
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let got = curl(&["-b", &cookie, &format!("http://127.0.0.1:{bp}/items")]);
    assert_eq!((got.status, got.body.as_str()), (200, "1"));
}

#[test]
fn with_the_app_down_requests_get_502_naming_it_and_pass_once_it_listens() {
    let (opts, pp, pa) = with_proxy(Role::Primary);
    let primary = MountedNode::start_with(opts);
    sql(&primary, "db", None, "CREATE TABLE t (v);");
    // The proxy answers its health check itself; nothing listens on the app's port.
    wait_proxy(pp, &primary);
    let unreachable = format!("the application is unreachable at 127.0.0.1:{pa}");
    for args in [&["-X", "GET"][..], &["-X", "POST", "-d", "x"][..]] {
        let started = Instant::now();
        let url = format!("http://127.0.0.1:{pp}/items");
        let got = curl(&[args, &[url.as_str()][..]].concat());
        let took = started.elapsed();
        assert_eq!(got.status, 502, "{args:?}: {}", got.body);
        assert!(got.body.contains(&unreachable), "{args:?}: {}", got.body);
        // No app of litefs-rs's to wait for: a short retry, not LiteFS's 30 s.
        assert!(
            took < Duration::from_secs(5),
            "{args:?}: the 502 took {took:?}"
        );
    }

    let app = App::start(&primary, pa);
    let until = Instant::now() + CATCH_UP;
    while std::net::TcpStream::connect(("127.0.0.1", pa)).is_err() {
        assert!(Instant::now() < until, "the app never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = curl(&[&format!("http://127.0.0.1:{pp}/items")]);
    assert_eq!(
        (got.status, got.body.as_str()),
        (200, "0"),
        "{}",
        primary.log()
    );

    // The app goes away again: the next request gets the 502 just as fast.
    drop(app);
    let started = Instant::now();
    let got = curl(&[&format!("http://127.0.0.1:{pp}/items")]);
    assert_eq!(got.status, 502, "{}", got.body);
    assert!(got.body.contains(&unreachable), "{}", got.body);
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Standard base64 (with padding).
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ABC[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The `Sec-WebSocket-Accept` answer to `key` (RFC 6455 section 4.2.2), computed by Python.
fn websocket_accept(key: &str) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import base64, hashlib, sys\n\
             guid = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'\n\
             print(base64.b64encode(hashlib.sha1((sys.argv[1] + guid).encode()).digest()).decode())",
        )
        .arg(key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A WebSocket client on a raw TCP connection.
struct WebSocket {
    tcp: std::net::TcpStream,
    reader: std::io::BufReader<std::net::TcpStream>,
}

impl WebSocket {
    /// The opening handshake on `GET /websocket`; the answer's headers (lower-case names).
    fn connect(port: u16, key: &str) -> (WebSocket, Vec<(String, String)>) {
        use std::io::BufRead as _;
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(CATCH_UP)).unwrap();
        write!(
            tcp,
            "GET /websocket HTTP/1.1\r\nHost: app\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut reader = std::io::BufReader::new(tcp.try_clone().unwrap());
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 101"), "{status}");
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            let (name, value) = line.split_once(':').expect("a header line");
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        (WebSocket { tcp, reader }, headers)
    }

    /// Sends one final frame, masked as a client must.
    fn send(&mut self, opcode: u8, payload: &[u8], rng: &mut Rng) {
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = (rng.next_u64() as u32).to_be_bytes();
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.tcp.write_all(&frame).unwrap();
    }

    /// Reads one frame from the server (never masked): its first byte and payload.
    fn recv(&mut self) -> (u8, Vec<u8>) {
        use std::io::Read as _;
        let mut head = [0u8; 2];
        self.reader.read_exact(&mut head).unwrap();
        assert_eq!(head[1] & 0x80, 0, "a server frame is never masked");
        let n = match head[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                self.reader.read_exact(&mut b).unwrap();
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                self.reader.read_exact(&mut b).unwrap();
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; usize::try_from(n).unwrap()];
        self.reader.read_exact(&mut payload).unwrap();
        (head[0], payload)
    }
}

#[test]
fn a_websocket_echoes_through_the_proxy_on_a_replica_and_on_the_primary() {
    let pair = Pair::start(None);
    let mut rng = Rng::from_env_or_time();
    for (port, app, other) in [
        (pair.rp, &pair.replica_app, &pair.primary_app),
        (pair.pp, &pair.primary_app, &pair.replica_app),
    ] {
        let key = base64(&[rng.next_u64().to_le_bytes(), rng.next_u64().to_le_bytes()].concat());
        let (mut ws, headers) = WebSocket::connect(port, &key);
        let accept = websocket_accept(&key);
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            header("sec-websocket-accept"),
            Some(accept.as_str()),
            "{headers:?}"
        );
        assert_eq!(
            header("upgrade").map(str::to_ascii_lowercase).as_deref(),
            Some("websocket")
        );
        // The node's own app answered (a read stays on its node).
        assert!(app.requests().contains(&format!("WEBSOCKET {accept}")));
        assert!(!other.requests().contains(&format!("WEBSOCKET {accept}")));

        let text = format!("hello through the proxy on port {port}");
        ws.send(0x1, text.as_bytes(), &mut rng);
        assert_eq!(ws.recv(), (0x81, text.into_bytes()));
        let binary: Vec<u8> = (0..100_000).map(|_| rng.next_u64() as u8).collect();
        ws.send(0x2, &binary, &mut rng);
        let (first, echo) = ws.recv();
        assert_eq!(first, 0x82);
        assert!(echo == binary, "the 100 KB binary frame came back changed");
        // Close (status 1000): echoed, then the connection ends.
        ws.send(0x8, &1000u16.to_be_bytes(), &mut rng);
        assert_eq!(ws.recv(), (0x88, 1000u16.to_be_bytes().to_vec()));
        let mut rest = Vec::new();
        use std::io::Read as _;
        ws.reader.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{} bytes after the close", rest.len());
    }
}
