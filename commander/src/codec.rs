//! The frame codec of the commander's reader: the server's byte stream cut into 24-byte
//! frames (docs/protocol.md), for tokio-util's `FramedRead`. Sans-IO.
//! It must never buffer a second frame's bytes before the first is taken, nor end the stream
//! for a malformed frame (that one is acknowledged as malformed).

use ruroco_proto::frame::FrameError;
use ruroco_proto::{FRAME_LEN, Frame};
/// The buffer the codec reads from (re-exported so the fuzz targets need no tokio-util).
pub use tokio_util::bytes::BytesMut;
/// The trait the codec implements (re-exported for the same reason).
pub use tokio_util::codec::Decoder;

/// What the codec yields: a frame (parsed, or why it is malformed), or the news that a frame
/// has begun, so the reader can bound the time its other bytes may take.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// The first bytes of a frame arrived, not all 24 yet.
    Started,
    /// 24 bytes, parsed.
    Frame(Result<Frame, FrameError>),
}

/// Why a connection stopped being read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// read(2) on the connection failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The peer closed the connection after `bytes` bytes of a frame.
    #[error("connection closed {bytes} bytes into a frame")]
    Short {
        /// Bytes of the unfinished frame, 1..=23.
        bytes: usize,
    },
}

/// Fixed-length framing of the server's stream: every 24 bytes are one frame. A malformed
/// frame is an item (it is acknowledged as malformed), not a stream error.
#[derive(Debug, Default)]
pub struct FrameCodec {
    /// A `Started` was yielded for the bytes now buffered.
    begun: bool,
}

impl Decoder for FrameCodec {
    type Item = Chunk;
    type Error = ReadError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Chunk>, ReadError> {
        if src.len() >= FRAME_LEN {
            self.begun = false;
            let mut bytes = [0u8; FRAME_LEN];
            bytes.copy_from_slice(&src.split_to(FRAME_LEN));
            return Ok(Some(Chunk::Frame(Frame::from_bytes(&bytes))));
        }
        if !src.is_empty() && !self.begun {
            self.begun = true;
            return Ok(Some(Chunk::Started));
        }
        Ok(None)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Chunk>, ReadError> {
        match self.decode(src)? {
            Some(Chunk::Frame(f)) => Ok(Some(Chunk::Frame(f))),
            _ if src.is_empty() => Ok(None),
            _ => Err(ReadError::Short { bytes: src.len() }),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ruroco_proto::CmdHash;

    /// The 24 bytes of a frame for `name` and 192.0.2.7 (shared with the listener's tests).
    pub(crate) fn frame(name: &str) -> [u8; FRAME_LEN] {
        Frame {
            cmd: CmdHash::of_name(name),
            ip: "192.0.2.7".parse().unwrap(),
        }
        .to_bytes()
    }

    #[test]
    fn the_codec_cuts_24_byte_frames_and_says_when_one_begins() {
        let mut c = FrameCodec::default();
        let mut buf = BytesMut::new();
        assert_eq!(c.decode(&mut buf).unwrap(), None);
        let (a, b) = (frame("a"), frame("b"));
        buf.extend_from_slice(&a);
        buf.extend_from_slice(&b[..5]);
        let a_parsed = Frame::from_bytes(&a);
        assert_eq!(c.decode(&mut buf).unwrap(), Some(Chunk::Frame(a_parsed)));
        assert_eq!(c.decode(&mut buf).unwrap(), Some(Chunk::Started));
        assert_eq!(
            c.decode(&mut buf).unwrap(),
            None,
            "Started only once per frame"
        );
        buf.extend_from_slice(&b[5..]);
        assert_eq!(
            c.decode(&mut buf).unwrap(),
            Some(Chunk::Frame(Frame::from_bytes(&b)))
        );
        assert!(buf.is_empty());
        // A malformed frame is an item to acknowledge, not an end of the stream.
        buf.extend_from_slice(&[0; FRAME_LEN]);
        assert_eq!(
            c.decode(&mut buf).unwrap(),
            Some(Chunk::Frame(Err(FrameError::NoIp)))
        );
    }

    #[test]
    fn eof_inside_a_frame_is_a_short_frame_and_a_clean_eof_is_none() {
        let mut c = FrameCodec::default();
        let mut buf = BytesMut::from(&frame("a")[..7]);
        assert!(matches!(
            c.decode_eof(&mut buf),
            Err(ReadError::Short { bytes: 7 })
        ));
        let mut c = FrameCodec::default();
        let mut buf = BytesMut::new();
        assert!(matches!(c.decode_eof(&mut buf), Ok(None)));
    }

    /// Whatever a peer sends, the codec keeps fewer than 24 bytes once it returns `None`, so a
    /// connection's buffer stays bounded.
    #[test]
    fn the_buffer_holds_less_than_a_frame_after_decoding() {
        let mut c = FrameCodec::default();
        let mut buf = BytesMut::new();
        for chunk in [1usize, 23, 24, 100, 4096, 7] {
            buf.extend_from_slice(&vec![0x5a; chunk]);
            while c.decode(&mut buf).unwrap().is_some() {}
            assert!(buf.len() < FRAME_LEN, "{}", buf.len());
        }
    }
}
