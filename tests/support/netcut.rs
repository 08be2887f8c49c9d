//! A TCP link the test can sever: a forwarder on 127.0.0.1 that passes bytes both ways to a
//! target port until it is cut. While cut it behaves like a network partition rather than a
//! closed port: connections (new and existing) stay open but nothing crosses them, so the
//! peers see silence and must time out on their own. Healing closes every connection that
//! lived through the cut (as a middlebox that forgot them would) and forwards new ones again.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Debug, Default)]
struct Shared {
    target: AtomicU16,
    cut: AtomicBool,
    stop: AtomicBool,
    /// The sockets of every open connection (both sides, by connection), to close them on
    /// heal and on drop.
    open: Mutex<BTreeMap<u64, Vec<TcpStream>>>,
    next: AtomicU64,
}

impl Shared {
    fn track(&self, conn: u64, s: &TcpStream) {
        if let Ok(c) = s.try_clone() {
            self.open.lock().unwrap().entry(conn).or_default().push(c);
        }
    }

    fn forget(&self, conn: u64) {
        self.open.lock().unwrap().remove(&conn);
    }

    fn close_all(&self) {
        for (_, socks) in std::mem::take(&mut *self.open.lock().unwrap()) {
            for s in socks {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

/// One severable link; dropping it closes everything it forwards.
#[derive(Debug)]
pub struct Link {
    port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Link {
    /// A link to `target` (0: set later with [`Link::set_target`]).
    pub fn to(target: u16) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a link");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        shared.target.store(target, Ordering::SeqCst);
        let sh = shared.clone();
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let id = sh.next.fetch_add(1, Ordering::SeqCst);
                sh.track(id, &conn);
                let sh2 = sh.clone();
                std::thread::spawn(move || {
                    serve(id, conn, &sh2);
                    sh2.forget(id);
                });
            }
        });
        Link {
            port,
            shared,
            accept: Some(accept),
        }
    }

    /// The port peers connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn set_target(&self, target: u16) {
        self.shared.target.store(target, Ordering::SeqCst);
    }

    /// Nothing crosses the link from now on, in either direction.
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
    }

    /// Closes the connections that lived through the cut and forwards again.
    pub fn heal(&self) {
        self.shared.close_all();
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    pub fn is_cut(&self) -> bool {
        self.shared.cut.load(Ordering::SeqCst)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accepting thread.
        let _ =
            TcpStream::connect_timeout(&([127, 0, 0, 1], self.port).into(), Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        self.shared.close_all();
    }
}

/// One accepted connection: connected to the target unless the link is cut (then it is held
/// open and read into the void until the link heals).
fn serve(id: u64, client: TcpStream, sh: &Arc<Shared>) {
    if sh.cut.load(Ordering::SeqCst) {
        drain(client);
        return;
    }
    let target = sh.target.load(Ordering::SeqCst);
    let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    sh.track(id, &upstream);
    let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let sh2 = sh.clone();
    let back = std::thread::spawn(move || pump(u2, c2, &sh2));
    pump(client, upstream, sh);
    let _ = back.join();
}

/// Copies `from` into `to` while the link is up; drops what arrives while it is cut.
fn pump(mut from: TcpStream, mut to: TcpStream, sh: &Shared) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if sh.cut.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn drain(mut s: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
}
