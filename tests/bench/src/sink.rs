//! The ceiling: a bare receive loop on the server's own socket setup
//! (`ruroco_server::activation::take`: same bind, same `SO_RCVBUF`) and the server's own
//! batched receive (`ruroco_server::receive::Receiver`, `recvmmsg` of 64), counting only.
//! Runs as a subprocess of the benchmark (`bench --sink RCVBUF`) so its CPU time and socket
//! drops are read from /proc like the server's. It must never judge, log or answer anything.

use ruroco_server::activation;
use ruroco_server::receive::Receiver;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Subprocess entry: bind 127.0.0.1:0, print `port N`, count datagrams until stdin closes,
/// then print `count N` and exit.
pub fn main(receive_buffer: usize) -> Result<(), String> {
    let listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    let taken = activation::take(listen, receive_buffer).map_err(|e| e.to_string())?;
    let sock = taken.socket;
    // Block in `peek` when the queue is empty (the server blocks in epoll instead).
    sock.set_nonblocking(false)
        .map_err(|e| format!("sink socket: {e}"))?;
    let port = sock.local_addr().map_err(|e| e.to_string())?.port();
    let count = Arc::new(AtomicU64::new(0));
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "port {port} rcvbuf {}", taken.receive_buffer).map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
    }
    let c = count.clone();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for _ in stdin.lock().lines() {}
        println!("count {}", c.load(Ordering::Relaxed));
        std::process::exit(0);
    });
    let mut rx = Receiver::new();
    let mut one = [0u8; 1];
    loop {
        match rx.recv(&sock) {
            Ok(n) => {
                count.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let _ = sock.peek(&mut one);
            }
            Err(_) => {}
        }
    }
}
