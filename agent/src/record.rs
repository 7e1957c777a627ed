//! The checked records of the agent's spool files (a job's lines and its task results):
//! `[u32 length][u32 CRC-32 of the body][postcard body]`, read back up to the first record that
//! is torn or damaged.

use std::io::Read;

/// The checked frame of the agent's spool files: `[u32 length][u32 CRC-32 of the body][postcard
/// body]`, refused when the body is longer than `max`.
pub fn encode_checked<T: serde::Serialize>(value: &T, max: usize) -> std::io::Result<Vec<u8>> {
    let body = postcard::to_allocvec(value).map_err(std::io::Error::other)?;
    if body.len() > max {
        return Err(std::io::Error::other("spool record too large"));
    }
    let mut frame = Vec::with_capacity(8 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Fills `buf`; `false` when the file ends first (a torn record).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    match r.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads one frame of `encode_checked` (or, with `checked` false, of format 1, which had no
/// checksum) and decodes it, with its length on disk; `None` at the end, or at the first frame
/// that is cut short, longer than `max`, fails its checksum or does not decode (what follows a
/// damaged record is not trusted).
pub fn read_checked<T: serde::de::DeserializeOwned>(
    r: &mut impl Read,
    max: usize,
    checked: bool,
) -> std::io::Result<Option<(T, u64)>> {
    let header_len = if checked { 8 } else { 4 };
    let mut header = [0u8; 8];
    if !read_full(r, &mut header[..header_len])? {
        return Ok(None);
    }
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len > max {
        return Ok(None);
    }
    let mut body = vec![0u8; len];
    if !read_full(r, &mut body)? {
        return Ok(None);
    }
    if checked {
        let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        if crc32fast::hash(&body) != crc {
            return Ok(None);
        }
    }
    Ok(postcard::from_bytes::<T>(&body)
        .ok()
        .map(|v| (v, (header_len + len) as u64)))
}
