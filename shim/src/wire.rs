//! ttrpc's wire format, shared by the task server and the event publisher: the `ttrpc`
//! crate's `MessageHeader` (length, stream id, type, flags) before each protobuf `Request`
//! or `Response`, read from the shim's own buffers so its one-thread loop never blocks.

use std::io::Read;

use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::ttrpc::proto::{MESSAGE_HEADER_LENGTH, MESSAGE_LENGTH_MAX};
use containerd_shim::protos::ttrpc::{get_status, Code, MessageHeader, Request, Response, Status};

pub use containerd_shim::protos::ttrpc::proto::{MESSAGE_TYPE_REQUEST, MESSAGE_TYPE_RESPONSE};

/// One message off the wire.
pub struct Frame {
    pub header: MessageHeader,
    pub payload: Vec<u8>,
}

/// Header and payload of one message, ready to write.
fn encode(header: MessageHeader, payload: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = header.into();
    out.extend_from_slice(payload);
    out
}

/// A request message on `stream_id`.
pub fn request_frame(stream_id: u32, payload: &[u8]) -> Vec<u8> {
    encode(MessageHeader::new_request(stream_id, payload.len() as u32), payload)
}

/// A response message on `stream_id`.
pub fn response_frame(stream_id: u32, payload: &[u8]) -> Vec<u8> {
    encode(MessageHeader::new_response(stream_id, payload.len() as u32), payload)
}

fn check_length(header: &MessageHeader) -> Result<usize, String> {
    let length = header.length as usize;
    if length > MESSAGE_LENGTH_MAX {
        return Err(format!("a ttrpc message of {length} bytes exceeds the {MESSAGE_LENGTH_MAX}-byte limit"));
    }
    Ok(length)
}

/// Takes the next whole message from the front of `buffer`, if one has arrived.
pub fn take_frame(buffer: &mut Vec<u8>) -> Result<Option<Frame>, String> {
    if buffer.len() < MESSAGE_HEADER_LENGTH {
        return Ok(None);
    }
    let header = MessageHeader::from(&buffer[..MESSAGE_HEADER_LENGTH]);
    let length = check_length(&header)?;
    if buffer.len() < MESSAGE_HEADER_LENGTH + length {
        return Ok(None);
    }
    let payload = buffer[MESSAGE_HEADER_LENGTH..MESSAGE_HEADER_LENGTH + length].to_vec();
    buffer.drain(..MESSAGE_HEADER_LENGTH + length);
    Ok(Some(Frame { header, payload }))
}

/// Reads one whole message from a blocking stream.
pub fn read_frame(stream: &mut impl Read) -> std::io::Result<Frame> {
    let mut bytes = [0u8; MESSAGE_HEADER_LENGTH];
    stream.read_exact(&mut bytes)?;
    let header = MessageHeader::from(bytes);
    let length = check_length(&header).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let mut payload = vec![0u8; length];
    stream.read_exact(&mut payload)?;
    Ok(Frame { header, payload })
}

/// A request for `service`/`method` carrying `message`.
pub fn request(service: &str, method: &str, message: &impl Message) -> Result<Vec<u8>, String> {
    let mut req = Request::new();
    req.service = service.to_string();
    req.method = method.to_string();
    req.payload = message.write_to_bytes().map_err(|e| format!("cannot encode {method}: {e}"))?;
    req.write_to_bytes().map_err(|e| format!("cannot encode {method}: {e}"))
}

/// A response: the reply's bytes, or the error status.
pub fn response(result: Result<Vec<u8>, Status>) -> Vec<u8> {
    let mut res = Response::new();
    match result {
        Ok(payload) => {
            res.status = Some(get_status(Code::OK, "")).into();
            res.payload = payload;
        }
        Err(status) => res.status = Some(status).into(),
    }
    res.write_to_bytes().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_through_a_buffer_that_fills_in_pieces() {
        let frame = request_frame(7, b"hello");
        assert_eq!(frame[..MESSAGE_HEADER_LENGTH], [0, 0, 0, 5, 0, 0, 0, 7, MESSAGE_TYPE_REQUEST, 0]);
        let mut buffer = frame[..8].to_vec();
        assert!(take_frame(&mut buffer).unwrap().is_none(), "half a header is not a message");
        buffer.extend_from_slice(&frame[8..12]);
        assert!(take_frame(&mut buffer).unwrap().is_none(), "half a payload is not a message");
        buffer.extend_from_slice(&frame[12..]);
        buffer.extend_from_slice(&response_frame(8, b"x"));
        let first = take_frame(&mut buffer).unwrap().unwrap();
        assert_eq!(
            (first.header.stream_id, first.header.type_, first.payload.as_slice()),
            (7, MESSAGE_TYPE_REQUEST, &b"hello"[..])
        );
        let second = read_frame(&mut buffer.as_slice()).unwrap();
        assert_eq!(
            (second.header.stream_id, second.header.type_, second.payload.as_slice()),
            (8, MESSAGE_TYPE_RESPONSE, &b"x"[..])
        );
    }

    #[test]
    fn an_oversized_message_is_refused() {
        let mut buffer: Vec<u8> = MessageHeader::new_request(1, (MESSAGE_LENGTH_MAX + 1) as u32).into();
        assert!(take_frame(&mut buffer).err().unwrap_or_default().contains("exceeds"));
        assert!(read_frame(&mut buffer.as_slice()).is_err());
    }
}
