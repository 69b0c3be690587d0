//! The netlink socket both clients talk through: message framing, one request answered up
//! to its acknowledgement or the end of its dump, and a batch whose acknowledgements are
//! all read back.

use netlink_packet_core::{NLMSG_DONE, NLMSG_ERROR, NLM_F_REQUEST};
use netlink_sys::SocketAddr;

use super::{failed, NetlinkError, Result};

/// The size of a netlink message header.
pub(crate) const HEADER_LEN: usize = 16;

/// Room for one read: a dump's messages come at most a few pages at a time. Reserved, not
/// filled: the kernel writes only what it sends, so the pages it never reaches are never
/// touched (zeroing them cost a page fault each, three sockets per ADD).
const RECEIVE_LEN: usize = 1 << 17;

pub(crate) struct Socket {
    socket: netlink_sys::Socket,
    sequence: u32,
    receive: Vec<u8>,
}

/// One message read from the kernel: its type, sequence number and bytes (header included).
pub(crate) struct Answer<'a> {
    pub kind: u16,
    pub sequence: u32,
    pub bytes: &'a [u8],
}

impl Answer<'_> {
    /// What follows the netlink header.
    pub fn payload(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..]
    }
}

fn io_failed(what: &str, e: std::io::Error) -> NetlinkError {
    failed(what, e.raw_os_error().unwrap_or(0))
}

/// The errno an error message carries (0 for an acknowledgement).
fn error_code(payload: &[u8]) -> i32 {
    payload.get(..4).map(|b| -i32::from_ne_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(0)
}

/// The messages in one read, whole.
pub(crate) fn messages(mut data: &[u8]) -> Vec<Answer<'_>> {
    let mut out = Vec::new();
    while data.len() >= HEADER_LEN {
        let length = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if length < HEADER_LEN || length > data.len() {
            break;
        }
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        let sequence = u32::from_ne_bytes([data[8], data[9], data[10], data[11]]);
        out.push(Answer { kind, sequence, bytes: &data[..length] });
        data = &data[((length + 3) & !3).min(data.len())..];
    }
    out
}

/// Starts a message in `buffer` (its length is written by `end_message`); returns where
/// it starts.
pub(crate) fn begin_message(buffer: &mut Vec<u8>, kind: u16, flags: u16, sequence: u32) -> usize {
    let start = buffer.len();
    buffer.extend_from_slice(&0u32.to_ne_bytes());
    buffer.extend_from_slice(&kind.to_ne_bytes());
    buffer.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    buffer.extend_from_slice(&sequence.to_ne_bytes());
    buffer.extend_from_slice(&0u32.to_ne_bytes());
    start
}

pub(crate) fn end_message(buffer: &mut [u8], start: usize) {
    let length = (buffer.len() - start) as u32;
    buffer[start..start + 4].copy_from_slice(&length.to_ne_bytes());
}

impl Socket {
    /// A socket of `protocol` (named `name` in errors) in the current network namespace.
    pub fn open(protocol: isize, name: &str) -> Result<Socket> {
        let mut socket = netlink_sys::Socket::new(protocol)
            .map_err(|e| io_failed(&format!("cannot open a netlink socket for {name}"), e))?;
        socket.bind_auto().map_err(|e| io_failed(&format!("cannot bind the netlink socket for {name}"), e))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| io_failed(&format!("cannot connect the netlink socket for {name} to the kernel"), e))?;
        Ok(Socket { socket, sequence: 0, receive: Vec::with_capacity(RECEIVE_LEN) })
    }

    /// Lets the kernel filter dumps by the request's header (4.20 and later; older
    /// kernels ignore it, so callers filter the answers too).
    pub fn set_strict_checking(&mut self) {
        let _ = self.socket.set_netlink_get_strict_chk(true);
    }

    /// The sequence number for the next request.
    pub fn next_sequence(&mut self) -> u32 {
        self.sequence = self.sequence.wrapping_add(1);
        self.sequence
    }

    /// Sends one request, numbered `sequence`, and returns the answers to it, whole, up to
    /// its acknowledgement or the end of its dump; a refusal is the request's error.
    pub fn request(&mut self, request: &[u8], sequence: u32, what: &str) -> Result<Vec<Vec<u8>>> {
        self.socket.send(request, 0).map_err(|e| io_failed(what, e))?;
        let mut answers = Vec::new();
        loop {
            self.receive.clear();
            self.socket.recv(&mut self.receive, 0).map_err(|e| io_failed(what, e))?;
            for answer in messages(&self.receive) {
                if answer.sequence != sequence {
                    continue;
                }
                match answer.kind {
                    NLMSG_DONE => return Ok(answers),
                    NLMSG_ERROR => {
                        return match error_code(answer.payload()) {
                            0 => Ok(answers),
                            errno => Err(failed(what, errno)),
                        };
                    }
                    kind if kind < 0x10 => {} // noop and overrun carry no answer
                    _ => answers.push(answer.bytes.to_vec()),
                }
            }
        }
    }

    /// Sends a batch whose every message asks for an acknowledgement, and reads all the
    /// answers queued: the first refusal, as its sequence number and errno. The kernel
    /// handles a batch while it is being sent, so every answer is queued when `send`
    /// returns.
    pub fn send_batch(&mut self, batch: &[u8], what: &str) -> Result<Option<(u32, i32)>> {
        self.socket.send(batch, 0).map_err(|e| io_failed(what, e))?;
        let mut first_refusal = None;
        loop {
            self.receive.clear();
            match self.socket.recv(&mut self.receive, libc::MSG_DONTWAIT) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(first_refusal),
                Err(e) => return Err(io_failed(&format!("{what}: cannot read the answer"), e)),
            }
            for answer in messages(&self.receive) {
                if answer.kind != NLMSG_ERROR || answer.payload().len() < 4 || first_refusal.is_some() {
                    continue;
                }
                let errno = error_code(answer.payload());
                if errno != 0 {
                    first_refusal = Some((answer.sequence, errno));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_read_back_whole_past_their_padding() {
        let mut buffer = Vec::new();
        let first = begin_message(&mut buffer, NLMSG_ERROR, 0, 7);
        buffer.extend_from_slice(&(-libc::ENOENT).to_ne_bytes());
        buffer.extend_from_slice(&[1, 2]); // 22 bytes: the next message starts at 24
        end_message(&mut buffer, first);
        buffer.resize(24, 0);
        let second = begin_message(&mut buffer, NLMSG_DONE, 0, 8);
        end_message(&mut buffer, second);
        buffer.extend_from_slice(&[0; 8]); // a truncated header is not read
        let read = messages(&buffer);
        assert_eq!(
            read.iter().map(|m| (m.kind, m.sequence, m.bytes.len())).collect::<Vec<_>>(),
            [(NLMSG_ERROR, 7, 22), (NLMSG_DONE, 8, 16)]
        );
        assert_eq!(error_code(read[0].payload()), libc::ENOENT);
        assert_eq!(error_code(read[1].payload()), 0);
    }
}
