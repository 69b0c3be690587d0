//! ttrpc's wire format: a 10-byte header (length, stream id, type, flags; big-endian) before
//! each protobuf `Request` or `Response`, shared by the task server and the event publisher.

use std::io::Read;

use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::ttrpc::{Code, Request, Response, Status};

pub const HEADER_LEN: usize = 10;
pub const TYPE_REQUEST: u8 = 1;
pub const TYPE_RESPONSE: u8 = 2;
/// ttrpc's own limit on one message.
const MAX_MESSAGE: usize = 4 << 20;

/// One message off the wire.
pub struct Frame {
    pub stream_id: u32,
    pub kind: u8,
    pub payload: Vec<u8>,
}

/// Header and payload of one message, ready to write.
pub fn encode(stream_id: u32, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&stream_id.to_be_bytes());
    out.extend([kind, 0]);
    out.extend_from_slice(payload);
    out
}

/// Takes the next whole message from the front of `buffer`, if one has arrived.
pub fn take_frame(buffer: &mut Vec<u8>) -> Result<Option<Frame>, String> {
    if buffer.len() < HEADER_LEN {
        return Ok(None);
    }
    let length = u32::from_be_bytes(buffer[0..4].try_into().unwrap()) as usize;
    if length > MAX_MESSAGE {
        return Err(format!("a ttrpc message of {length} bytes exceeds the {MAX_MESSAGE}-byte limit"));
    }
    if buffer.len() < HEADER_LEN + length {
        return Ok(None);
    }
    let stream_id = u32::from_be_bytes(buffer[4..8].try_into().unwrap());
    let kind = buffer[8];
    let payload = buffer[HEADER_LEN..HEADER_LEN + length].to_vec();
    buffer.drain(..HEADER_LEN + length);
    Ok(Some(Frame { stream_id, kind, payload }))
}

/// Reads one whole message from a blocking stream.
pub fn read_frame(stream: &mut impl Read) -> std::io::Result<Frame> {
    let mut header = [0u8; HEADER_LEN];
    stream.read_exact(&mut header)?;
    let mut buffer = header.to_vec();
    let length = u32::from_be_bytes(header[0..4].try_into().unwrap()) as usize;
    if length > MAX_MESSAGE {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("a ttrpc message of {length} bytes exceeds the limit")));
    }
    buffer.resize(HEADER_LEN + length, 0);
    stream.read_exact(&mut buffer[HEADER_LEN..])?;
    Ok(take_frame(&mut buffer).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?.expect("a whole frame was read"))
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
            res.status = Some(containerd_shim::protos::ttrpc::get_status(Code::OK, "")).into();
            res.payload = payload;
        }
        Err(status) => res.status = Some(status).into(),
    }
    res.write_to_bytes().unwrap_or_default()
}
