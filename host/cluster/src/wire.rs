//! The replication stream between a master and a slave: length-prefixed frames over one TCP
//! connection.
//!
//! ```text
//! frame = kind: u8, length: u32 (big-endian), payload: length bytes
//! slave → master   HELLO    JSON {broker_set, broker_id, log_end, tail, offsets made while serving}
//!                  ACK      log_end: u64            (after every appended chunk, and on a heartbeat)
//! master → slave   DATA     offset: u64, master_written: u64, log bytes (whole entries)
//!                  BEAT     master_written: u64     (when there is nothing to send)
//!                  META     JSON {topics, groups, offsets}
//!                  REFUSE   why the master will not stream to this slave (UTF-8), then it closes
//! ```
//! A slave's log is the master's log byte for byte, so one offset names the same place on both.

use std::io::{self, Read, Write};

/// Largest frame either side accepts; a DATA frame carries at most `transfer_bytes_max` of log.
pub const FRAME_BYTES_MAX: u32 = 64 << 20;
/// Largest first frame a master reads from a connection it knows nothing about yet.
pub const HELLO_BYTES_MAX: u32 = 4 << 20;
/// Most bytes set aside for a frame's payload before they arrive.
const READ_CHUNK_BYTES: usize = 64 << 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello { json: Vec<u8> },
    Ack { log_end: u64 },
    Data { offset: u64, master_written: u64, bytes: Vec<u8> },
    Beat { master_written: u64 },
    Meta { json: Vec<u8> },
    Refuse { reason: String },
}

const HELLO: u8 = 1;
const ACK: u8 = 2;
const DATA: u8 = 10;
const BEAT: u8 = 11;
const META: u8 = 12;
const REFUSE: u8 = 13;

fn u64_at(payload: &[u8], at: usize) -> io::Result<u64> {
    payload
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "replication frame too short"))
}

impl Frame {
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        let (kind, head, tail): (u8, Vec<u8>, &[u8]) = match self {
            Frame::Hello { json } => (HELLO, Vec::new(), json),
            Frame::Ack { log_end } => (ACK, log_end.to_be_bytes().to_vec(), &[]),
            Frame::Data { offset, master_written, bytes } => {
                (DATA, [offset.to_be_bytes(), master_written.to_be_bytes()].concat(), bytes)
            }
            Frame::Beat { master_written } => (BEAT, master_written.to_be_bytes().to_vec(), &[]),
            Frame::Meta { json } => (META, Vec::new(), json),
            Frame::Refuse { reason } => (REFUSE, Vec::new(), reason.as_bytes()),
        };
        let len = u32::try_from(head.len() + tail.len())
            .ok()
            .filter(|&l| l <= FRAME_BYTES_MAX)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "replication frame too large"))?;
        let mut prefix = [0u8; 5];
        prefix[0] = kind;
        prefix[1..].copy_from_slice(&len.to_be_bytes());
        out.write_all(&prefix)?;
        out.write_all(&head)?;
        out.write_all(tail)?;
        out.flush()
    }

    pub fn read_from(input: &mut impl Read) -> io::Result<Frame> {
        Frame::read_limited(input, FRAME_BYTES_MAX)
    }

    /// Reads one frame of at most `max` bytes.
    pub fn read_limited(input: &mut impl Read, max: u32) -> io::Result<Frame> {
        let mut prefix = [0u8; 5];
        input.read_exact(&mut prefix)?;
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
        if len > max {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("replication frame of {len} bytes")));
        }
        // Memory grows with the bytes that arrive, not with the length a peer announces.
        let mut payload = Vec::with_capacity((len as usize).min(READ_CHUNK_BYTES));
        input.by_ref().take(u64::from(len)).read_to_end(&mut payload)?;
        if payload.len() != len as usize {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "replication frame cut short"));
        }
        let exactly = |want: usize| {
            if payload.len() == want {
                Ok(())
            } else {
                let got = payload.len();
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("replication frame of {got} bytes, expected {want}"),
                ))
            }
        };
        Ok(match prefix[0] {
            HELLO => Frame::Hello { json: payload },
            ACK => {
                exactly(8)?;
                Frame::Ack { log_end: u64_at(&payload, 0)? }
            }
            DATA => {
                let (offset, master_written) = (u64_at(&payload, 0)?, u64_at(&payload, 8)?);
                payload.drain(..16);
                Frame::Data { offset, master_written, bytes: payload }
            }
            BEAT => {
                exactly(8)?;
                Frame::Beat { master_written: u64_at(&payload, 0)? }
            }
            META => Frame::Meta { json: payload },
            REFUSE => Frame::Refuse { reason: String::from_utf8_lossy(&payload).into_owned() },
            other => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("unknown replication frame {other}")));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_round_trips_and_garbage_is_an_error() {
        let frames = [
            Frame::Hello { json: b"{}".to_vec() },
            Frame::Ack { log_end: 77 },
            Frame::Data { offset: 10, master_written: 99, bytes: vec![1, 2, 3] },
            Frame::Beat { master_written: 5 },
            Frame::Meta { json: b"{}".to_vec() },
            Frame::Refuse { reason: "diverged".into() },
        ];
        let mut buf = Vec::new();
        for f in &frames {
            f.write_to(&mut buf).expect("write");
        }
        let mut input = &buf[..];
        for f in &frames {
            assert_eq!(&Frame::read_from(&mut input).expect("read"), f);
        }
        assert!(Frame::read_from(&mut input).is_err(), "end of stream");
        assert!(Frame::read_from(&mut &[99u8, 0, 0, 0, 0][..]).is_err(), "unknown kind");
        assert!(Frame::read_from(&mut &[ACK, 0, 0, 0, 2, 0, 0][..]).is_err(), "short payload");
        assert!(Frame::read_from(&mut &[ACK, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1, 0][..]).is_err(), "trailing bytes");
        assert!(Frame::read_from(&mut &[BEAT, 0, 0, 0, 4, 0, 0, 0, 1][..]).is_err(), "short beat");
        assert!(Frame::read_from(&mut &[HELLO, 0, 0, 0, 9, b'{', b'}'][..]).is_err(), "frame cut short");
        assert!(Frame::read_from(&mut &[DATA, 0xff, 0xff, 0xff, 0xff][..]).is_err(), "oversized");
        assert!(Frame::read_limited(&mut &[HELLO, 0, 0x10, 0, 0][..], 1024).is_err(), "over the first frame's limit");
    }
}
