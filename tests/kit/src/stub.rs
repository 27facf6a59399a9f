//! A stub commander for the server's tests: a Unix listener the test owns that reads 24-byte
//! frames and acknowledges each as done, as the real commander does (SPEC "Server to
//! commander"). It must never judge a frame: it passes every one on, decoded by the test.

use crate::fs::chmod;
use crate::wait::DEADLINE;
use ruroco_proto::{Ack, AckOutcome, FRAME_LEN, Frame};
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::mpsc;

/// A commander socket at `path` the test drives, mode 0777 so a server running as nobody can
/// connect.
///
/// # Panics
/// When the socket cannot be bound.
pub fn bind_commander(path: &Path) -> UnixListener {
    let l = UnixListener::bind(path)
        .unwrap_or_else(|e| panic!("bind commander socket {}: {e}", path.display()));
    chmod(path, 0o777);
    l
}

/// The stub commander: accepts connections, reports every 24-byte frame it reads and
/// acknowledges it as done (`seq` counted per connection, like the real commander).
#[derive(Debug)]
pub struct StubCommander {
    /// Every frame read, raw, in the order read (across connections).
    pub frames: mpsc::Receiver<[u8; FRAME_LEN]>,
}

impl StubCommander {
    /// Listen at `path` (see [`bind_commander`]) on a thread of its own.
    pub fn start(path: &Path) -> Self {
        let l = bind_commander(path);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut c) = conn else { return };
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let mut b = [0u8; FRAME_LEN];
                    let mut seq = 0u64;
                    while c.read_exact(&mut b).is_ok() {
                        let ack = Ack {
                            seq,
                            outcome: AckOutcome::Done,
                        };
                        seq += 1;
                        let _ = c.write_all(&ack.to_bytes());
                        if tx.send(b).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { frames: rx }
    }

    /// The next frame, decoded.
    ///
    /// # Panics
    /// When none arrives within [`DEADLINE`] or it does not decode.
    pub fn next_frame(&self) -> Frame {
        let b = self
            .frames
            .recv_timeout(DEADLINE)
            .expect("the stub commander received no frame within the deadline");
        Frame::from_bytes(&b).unwrap_or_else(|e| panic!("an undecodable frame {b:?}: {e:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::temp_dir;
    use ruroco_proto::{ACK_LEN, CmdHash};
    use std::net::{IpAddr, Ipv4Addr};
    use std::os::unix::net::UnixStream;

    #[test]
    fn frames_come_out_decoded_and_are_acknowledged_in_order() {
        let d = temp_dir("ruroco-testkit.");
        let path = d.path().join("commander.sock");
        let stub = StubCommander::start(&path);
        let mut c = UnixStream::connect(&path).unwrap();
        c.set_read_timeout(Some(DEADLINE)).unwrap();
        let f = Frame {
            cmd: CmdHash::of_name("hello"),
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        for seq in 0..2 {
            c.write_all(&f.to_bytes()).unwrap();
            assert_eq!(stub.next_frame(), f);
            let mut a = [0u8; ACK_LEN];
            c.read_exact(&mut a).unwrap();
            let ack = Ack::from_bytes(&a).unwrap();
            assert_eq!((ack.seq, ack.outcome), (seq, AckOutcome::Done));
        }
        assert!(stub.frames.try_recv().is_err());
    }
}
