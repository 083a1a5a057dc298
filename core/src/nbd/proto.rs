//! NBD wire format: constants, request encoding and pure parsers of everything a server sends.
//!
//! Every function here works on byte slices already read from the socket, never touches I/O and
//! never panics on any input, so the fuzz targets in `core/fuzz` and the proptest suite can feed
//! it arbitrary bytes. Lengths are checked against explicit bounds before anything is allocated.

use crate::error::{Error, ErrorCode, Result};

/// `NBDMAGIC`, the first eight bytes a newstyle server sends.
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: newstyle greeting and option request magic.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of option replies.
pub const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of transmission requests.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of simple replies.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Magic of structured reply chunks.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flag: the server speaks fixed newstyle.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Handshake flag: the server can skip the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;

/// Option: select an export and end negotiation (old, no error reporting).
pub const OPT_EXPORT_NAME: u32 = 1;
/// Option: abort negotiation.
pub const OPT_ABORT: u32 = 2;
/// Option: select an export with info replies.
pub const OPT_GO: u32 = 7;
/// Option: upgrade the connection to TLS before anything else.
pub const OPT_STARTTLS: u32 = 5;
/// Option: structured replies for the transmission phase.
pub const OPT_STRUCTURED_REPLY: u32 = 8;
/// Option: choose metadata contexts for block status.
pub const OPT_SET_META_CONTEXT: u32 = 10;

/// Option reply: done.
pub const REP_ACK: u32 = 1;
/// Option reply: an export description (to `NBD_OPT_LIST`).
pub const REP_SERVER: u32 = 2;
/// Option reply: an `NBD_INFO_*` item.
pub const REP_INFO: u32 = 3;
/// Option reply: one granted metadata context.
pub const REP_META_CONTEXT: u32 = 4;
/// Bit set in every option error reply.
pub const REP_FLAG_ERROR: u32 = 1 << 31;
/// Option error: the option is not supported.
pub const REP_ERR_UNSUP: u32 = REP_FLAG_ERROR | 1;
/// Option error: the server only talks after `NBD_OPT_STARTTLS`.
pub const REP_ERR_TLS_REQD: u32 = REP_FLAG_ERROR | 5;

/// Info item: export size and transmission flags.
pub const INFO_EXPORT: u16 = 0;
/// Info item: block size constraints.
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flag: flags are valid.
pub const TF_HAS_FLAGS: u16 = 1 << 0;
/// Transmission flag: the export is read-only.
pub const TF_READ_ONLY: u16 = 1 << 1;
/// Transmission flag: `NBD_CMD_FLUSH` is supported.
pub const TF_SEND_FLUSH: u16 = 1 << 2;
/// Transmission flag: `NBD_CMD_FLAG_FUA` is supported.
pub const TF_SEND_FUA: u16 = 1 << 3;
/// Transmission flag: `NBD_CMD_TRIM` is supported.
pub const TF_SEND_TRIM: u16 = 1 << 5;
/// Transmission flag: `NBD_CMD_WRITE_ZEROES` is supported.
pub const TF_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// Transmission flag: several connections see one consistent export.
pub const TF_CAN_MULTI_CONN: u16 = 1 << 8;
/// Transmission flag: `NBD_CMD_FLAG_FAST_ZERO` is supported.
pub const TF_SEND_FAST_ZERO: u16 = 1 << 11;

/// Command: read.
pub const CMD_READ: u16 = 0;
/// Command: write.
pub const CMD_WRITE: u16 = 1;
/// Command: disconnect.
pub const CMD_DISC: u16 = 2;
/// Command: flush.
pub const CMD_FLUSH: u16 = 3;
/// Command: trim (discard).
pub const CMD_TRIM: u16 = 4;
/// Command: write zeroes.
pub const CMD_WRITE_ZEROES: u16 = 6;
/// Command: block status.
pub const CMD_BLOCK_STATUS: u16 = 7;

/// Command flag: do not punch holes when writing zeroes.
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;

/// Reply chunk flag: last chunk for this cookie.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
/// Chunk: no payload (final chunk).
pub const REPLY_TYPE_NONE: u16 = 0;
/// Chunk: data at an offset.
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
/// Chunk: a hole (reads as zeroes) at an offset.
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
/// Chunk: block status descriptors for one metadata context.
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
/// Chunk: an error for the whole request.
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) | 1;
/// Chunk: an error at an offset.
pub const REPLY_TYPE_ERROR_OFFSET: u16 = (1 << 15) | 2;

/// `base:allocation` flag: not allocated.
pub const STATE_HOLE: u32 = 1 << 0;
/// `base:allocation` flag: reads as zeroes.
pub const STATE_ZERO: u32 = 1 << 1;
/// `qemu:dirty-bitmap:*` flag: changed.
pub const STATE_DIRTY: u32 = 1 << 0;

/// Largest chunk payload we accept from a server: nothing we ask for is larger.
pub const MAX_CHUNK: u32 = 64 << 20;
/// Largest option reply payload we accept (we never ask for export lists).
pub const MAX_OPTION_REPLY: u32 = 1 << 20;
/// Largest request payload when the server gives no block size constraints (the spec's default).
pub const DEFAULT_MAX_PAYLOAD: u32 = 32 << 20;
/// Length of a simple reply header.
pub const SIMPLE_REPLY_LEN: usize = 16;
/// Length of a structured reply chunk header.
pub const STRUCTURED_REPLY_LEN: usize = 20;
/// Length of a request header.
pub const REQUEST_LEN: usize = 28;

fn protocol(msg: impl Into<String>) -> Error {
    Error::new(ErrorCode::NbdProtocol, msg)
}

fn be_u16(b: &[u8], at: usize) -> Result<u16> {
    b.get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_be_bytes)
        .ok_or_else(|| protocol(format!("nbd message too short: need {} bytes, have {}", at + 2, b.len())))
}

fn be_u32(b: &[u8], at: usize) -> Result<u32> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| protocol(format!("nbd message too short: need {} bytes, have {}", at + 4, b.len())))
}

fn be_u64(b: &[u8], at: usize) -> Result<u64> {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| protocol(format!("nbd message too short: need {} bytes, have {}", at + 8, b.len())))
}

/// The errno name of an NBD error number, for messages.
pub fn errno_name(errno: u32) -> &'static str {
    match errno {
        0 => "OK",
        1 => "EPERM",
        5 => "EIO",
        12 => "ENOMEM",
        22 => "EINVAL",
        28 => "ENOSPC",
        75 => "EOVERFLOW",
        95 => "ENOTSUP",
        108 => "ESHUTDOWN",
        _ => "unknown errno",
    }
}

/// The error a server's errno becomes: ENOSPC is [`ErrorCode::NoSpace`] (a full target), a
/// shutting-down server is [`ErrorCode::NbdConnect`] (retry elsewhere), anything else
/// [`ErrorCode::NbdRequest`].
pub fn request_error(errno: u32, what: &str, detail: &str) -> Error {
    let code = match errno {
        28 => ErrorCode::NoSpace,
        108 => ErrorCode::NbdConnect,
        _ => ErrorCode::NbdRequest,
    };
    let mut msg = format!("nbd {what} failed: server returned {} ({errno})", errno_name(errno));
    if !detail.is_empty() {
        msg.push_str(": ");
        msg.push_str(detail);
    }
    Error::new(code, msg)
}

/// Parse the 18-byte newstyle greeting; returns the server's handshake flags.
///
/// # Errors
/// [`ErrorCode::NbdProtocol`] for an oldstyle or non-fixed-newstyle server or bad magic.
pub fn parse_greeting(b: &[u8]) -> Result<u16> {
    if be_u64(b, 0)? != NBD_MAGIC {
        return Err(protocol("not an nbd server: bad greeting magic"));
    }
    let second = be_u64(b, 8)?;
    if second != IHAVEOPT {
        return Err(protocol(format!("unsupported nbd handshake (magic {second:#x}): only fixed newstyle is spoken")));
    }
    let flags = be_u16(b, 16)?;
    if flags & FLAG_FIXED_NEWSTYLE == 0 {
        return Err(protocol("nbd server does not speak fixed newstyle"));
    }
    Ok(flags)
}

/// Encode one option request.
pub fn encode_option(option: u32, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + data.len());
    v.extend_from_slice(&IHAVEOPT.to_be_bytes());
    v.extend_from_slice(&option.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

/// Payload of `NBD_OPT_GO` asking for the block size info.
pub fn encode_go(export: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + export.len());
    v.extend_from_slice(&(export.len() as u32).to_be_bytes());
    v.extend_from_slice(export.as_bytes());
    v.extend_from_slice(&1u16.to_be_bytes());
    v.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    v
}

/// Payload of `NBD_OPT_SET_META_CONTEXT` for `queries` on `export`.
pub fn encode_set_meta_context(export: &str, queries: &[&str]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(export.len() as u32).to_be_bytes());
    v.extend_from_slice(export.as_bytes());
    v.extend_from_slice(&(queries.len() as u32).to_be_bytes());
    for q in queries {
        v.extend_from_slice(&(q.len() as u32).to_be_bytes());
        v.extend_from_slice(q.as_bytes());
    }
    v
}

/// Header of an option reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionReplyHeader {
    /// The option this answers.
    pub option: u32,
    /// `NBD_REP_*`.
    pub reply_type: u32,
    /// Payload length that follows (bounded by [`MAX_OPTION_REPLY`]).
    pub len: u32,
}

/// Parse a 20-byte option reply header and check it answers `expected_option`.
///
/// # Errors
/// [`ErrorCode::NbdProtocol`] on bad magic, a reply to another option or an oversized payload.
pub fn parse_option_reply(b: &[u8], expected_option: u32) -> Result<OptionReplyHeader> {
    if be_u64(b, 0)? != OPT_REPLY_MAGIC {
        return Err(protocol("bad nbd option reply magic"));
    }
    let h = OptionReplyHeader { option: be_u32(b, 8)?, reply_type: be_u32(b, 12)?, len: be_u32(b, 16)? };
    if h.option != expected_option {
        return Err(protocol(format!("nbd option reply for option {} while waiting for {expected_option}", h.option)));
    }
    if h.len > MAX_OPTION_REPLY {
        return Err(protocol(format!("nbd option reply of {} bytes exceeds limit", h.len)));
    }
    Ok(h)
}

/// The name of an option error reply, for messages.
pub fn option_error_name(reply_type: u32) -> &'static str {
    match reply_type ^ REP_FLAG_ERROR {
        1 => "NBD_REP_ERR_UNSUP",
        2 => "NBD_REP_ERR_POLICY",
        3 => "NBD_REP_ERR_INVALID",
        4 => "NBD_REP_ERR_PLATFORM",
        5 => "NBD_REP_ERR_TLS_REQD",
        6 => "NBD_REP_ERR_UNKNOWN",
        7 => "NBD_REP_ERR_SHUTDOWN",
        8 => "NBD_REP_ERR_BLOCK_SIZE_REQD",
        9 => "NBD_REP_ERR_TOO_BIG",
        10 => "NBD_REP_ERR_EXT_HEADER_REQD",
        _ => "unknown option error",
    }
}

/// Block size constraints from `NBD_INFO_BLOCK_SIZE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSize {
    /// Minimum (alignment) block size, a power of two in `1..=65536`.
    pub minimum: u32,
    /// Preferred block size.
    pub preferred: u32,
    /// Largest request payload.
    pub maximum: u32,
}

/// One `NBD_REP_INFO` item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Info {
    /// Export size and transmission flags.
    Export {
        /// Size in bytes.
        size: u64,
        /// `NBD_FLAG_*` transmission flags.
        flags: u16,
    },
    /// Block size constraints.
    BlockSize(BlockSize),
    /// An item we did not ask for or do not use (name, description, ...).
    Other(u16),
}

/// Parse the payload of an `NBD_REP_INFO` reply.
///
/// # Errors
/// [`ErrorCode::NbdProtocol`] on wrong lengths or inconsistent block sizes.
pub fn parse_info(b: &[u8]) -> Result<Info> {
    let kind = be_u16(b, 0)?;
    match kind {
        INFO_EXPORT => {
            if b.len() != 12 {
                return Err(protocol(format!("nbd export info of {} bytes, expected 12", b.len())));
            }
            Ok(Info::Export { size: be_u64(b, 2)?, flags: be_u16(b, 10)? })
        }
        INFO_BLOCK_SIZE => {
            if b.len() != 14 {
                return Err(protocol(format!("nbd block size info of {} bytes, expected 14", b.len())));
            }
            let bs = BlockSize { minimum: be_u32(b, 2)?, preferred: be_u32(b, 6)?, maximum: be_u32(b, 10)? };
            if !bs.minimum.is_power_of_two() || bs.minimum > 65536 {
                return Err(protocol(format!("nbd minimum block size {} is not a power of two <= 64 KiB", bs.minimum)));
            }
            if bs.preferred < bs.minimum || bs.maximum < bs.minimum {
                return Err(protocol(format!(
                    "nbd block sizes inconsistent: min {} preferred {} max {}",
                    bs.minimum, bs.preferred, bs.maximum
                )));
            }
            Ok(Info::BlockSize(bs))
        }
        other => Ok(Info::Other(other)),
    }
}

/// Parse the payload of an `NBD_REP_META_CONTEXT` reply: context id and name.
///
/// # Errors
/// [`ErrorCode::NbdProtocol`] when too short or the name is not UTF-8.
pub fn parse_meta_context(b: &[u8]) -> Result<(u32, String)> {
    let id = be_u32(b, 0)?;
    let name = std::str::from_utf8(&b[4..]).map_err(|_| protocol("nbd meta context name is not utf-8"))?;
    Ok((id, name.to_owned()))
}

/// Parse what follows `NBD_OPT_EXPORT_NAME`: size and transmission flags (the 124 trailing
/// zero bytes, if any, are not part of `b`).
///
/// # Errors
/// [`ErrorCode::NbdProtocol`] when too short.
pub fn parse_export_name_reply(b: &[u8]) -> Result<(u64, u16)> {
    Ok((be_u64(b, 0)?, be_u16(b, 8)?))
}

/// Encode a 28-byte request header.
pub fn encode_request(flags: u16, typ: u16, cookie: u64, offset: u64, len: u32) -> [u8; REQUEST_LEN] {
    let mut h = [0u8; REQUEST_LEN];
    h[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    h[4..6].copy_from_slice(&flags.to_be_bytes());
    h[6..8].copy_from_slice(&typ.to_be_bytes());
    h[8..16].copy_from_slice(&cookie.to_be_bytes());
    h[16..24].copy_from_slice(&offset.to_be_bytes());
    h[24..28].copy_from_slice(&len.to_be_bytes());
    h
}

/// A transmission reply header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyHeader {
    /// Simple reply: an errno; a successful read's data follows.
    Simple {
        /// Errno, 0 for success.
        error: u32,
        /// The request's cookie.
        cookie: u64,
    },
    /// One structured reply chunk.
    Structured {
        /// `NBD_REPLY_FLAG_*`.
        flags: u16,
        /// `NBD_REPLY_TYPE_*`.
        typ: u16,
        /// The request's cookie.
        cookie: u64,
        /// Payload length (bounded by [`MAX_CHUNK`]).
        len: u32,
    },
}

impl ReplyHeader {
    /// The cookie this reply answers.
    pub fn cookie(&self) -> u64 {
        match *self {
            ReplyHeader::Simple { cookie, .. } | ReplyHeader::Structured { cookie, .. } => cookie,
        }
    }
}

/// The header length that follows a reply magic, or a protocol error for an unknown magic.
///
/// # Errors
/// [`ErrorCode::NbdProtocol`] for a magic that is neither simple nor structured, or structured
/// when it was not negotiated.
pub fn reply_header_len(magic: u32, structured: bool) -> Result<usize> {
    match magic {
        SIMPLE_REPLY_MAGIC => Ok(SIMPLE_REPLY_LEN),
        STRUCTURED_REPLY_MAGIC if structured => Ok(STRUCTURED_REPLY_LEN),
        STRUCTURED_REPLY_MAGIC => Err(protocol("nbd server sent a structured reply that was not negotiated")),
        m => Err(protocol(format!("bad nbd reply magic {m:#010x}"))),
    }
}

/// Parse a complete reply header (16 bytes simple or 20 bytes structured, magic included).
///
/// # Errors
/// [`ErrorCode::NbdProtocol`] on bad magic, a short buffer or a chunk over [`MAX_CHUNK`].
pub fn parse_reply_header(b: &[u8], structured: bool) -> Result<ReplyHeader> {
    let magic = be_u32(b, 0)?;
    let need = reply_header_len(magic, structured)?;
    if b.len() < need {
        return Err(protocol("nbd reply header truncated"));
    }
    if magic == SIMPLE_REPLY_MAGIC {
        return Ok(ReplyHeader::Simple { error: be_u32(b, 4)?, cookie: be_u64(b, 8)? });
    }
    let len = be_u32(b, 16)?;
    if len > MAX_CHUNK {
        return Err(protocol(format!("nbd reply chunk of {len} bytes exceeds the 64 MiB limit")));
    }
    Ok(ReplyHeader::Structured { flags: be_u16(b, 4)?, typ: be_u16(b, 6)?, cookie: be_u64(b, 8)?, len })
}

/// A parsed structured reply chunk other than the data of `NBD_REPLY_TYPE_OFFSET_DATA`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// `NBD_REPLY_TYPE_NONE`.
    None,
    /// `NBD_REPLY_TYPE_OFFSET_DATA`: offset and data length (the data follows the offset).
    Data {
        /// Absolute offset of the data.
        offset: u64,
        /// Data length.
        len: u32,
    },
    /// `NBD_REPLY_TYPE_OFFSET_HOLE`.
    Hole {
        /// Absolute offset.
        offset: u64,
        /// Length reading as zeroes.
        len: u32,
    },
    /// `NBD_REPLY_TYPE_BLOCK_STATUS`: context id and `(length, flags)` descriptors.
    BlockStatus {
        /// Metadata context id.
        context: u32,
        /// Extent descriptors in order.
        extents: Vec<(u32, u32)>,
    },
    /// `NBD_REPLY_TYPE_ERROR` or `NBD_REPLY_TYPE_ERROR_OFFSET`.
    Error {
        /// Errno.
        errno: u32,
        /// Server message (lossy UTF-8).
        message: String,
        /// Offset for `ERROR_OFFSET`.
        offset: Option<u64>,
    },
}

/// Parse a structured chunk payload. For `OFFSET_DATA` only the first 8 bytes (the offset) need
/// be present in `payload`; `len` is the header's payload length.
///
/// # Errors
/// [`ErrorCode::NbdProtocol`] for unknown chunk types, wrong lengths, a NONE chunk without the
/// DONE flag, or an error chunk with errno 0.
pub fn parse_chunk(flags: u16, typ: u16, len: u32, payload: &[u8]) -> Result<Chunk> {
    match typ {
        REPLY_TYPE_NONE => {
            if len != 0 || flags & REPLY_FLAG_DONE == 0 {
                return Err(protocol("nbd NONE chunk must be empty and final"));
            }
            Ok(Chunk::None)
        }
        REPLY_TYPE_OFFSET_DATA => {
            if len <= 8 {
                return Err(protocol("nbd data chunk without data"));
            }
            Ok(Chunk::Data { offset: be_u64(payload, 0)?, len: len - 8 })
        }
        REPLY_TYPE_OFFSET_HOLE => {
            if len != 12 || payload.len() != 12 {
                return Err(protocol(format!("nbd hole chunk of {len} bytes, expected 12")));
            }
            let hole = be_u32(payload, 8)?;
            if hole == 0 {
                return Err(protocol("nbd hole chunk of length 0"));
            }
            Ok(Chunk::Hole { offset: be_u64(payload, 0)?, len: hole })
        }
        REPLY_TYPE_BLOCK_STATUS => {
            if payload.len() != len as usize || len < 12 || (len - 4) & 7 != 0 {
                return Err(protocol(format!("nbd block status chunk of {len} bytes is malformed")));
            }
            let context = be_u32(payload, 0)?;
            let extents =
                payload[4..].chunks_exact(8).map(|d| Ok((be_u32(d, 0)?, be_u32(d, 4)?))).collect::<Result<Vec<_>>>()?;
            Ok(Chunk::BlockStatus { context, extents })
        }
        REPLY_TYPE_ERROR | REPLY_TYPE_ERROR_OFFSET => {
            if payload.len() != len as usize {
                return Err(protocol("nbd error chunk truncated"));
            }
            let errno = be_u32(payload, 0)?;
            let msg_len = be_u16(payload, 4)? as usize;
            let tail = if typ == REPLY_TYPE_ERROR_OFFSET { 8 } else { 0 };
            if payload.len() != 6 + msg_len + tail {
                return Err(protocol("nbd error chunk length does not match its message"));
            }
            if errno == 0 {
                return Err(protocol("nbd error chunk with errno 0"));
            }
            let message = String::from_utf8_lossy(&payload[6..6 + msg_len]).into_owned();
            let offset = if tail > 0 { Some(be_u64(payload, 6 + msg_len)?) } else { None };
            Ok(Chunk::Error { errno, message, offset })
        }
        t if t & (1 << 15) != 0 => {
            // Unknown error types must still be treated as errors, with the errno first.
            let errno = be_u32(payload, 0).unwrap_or(5);
            Ok(Chunk::Error {
                errno: if errno == 0 { 5 } else { errno },
                message: format!("error chunk type {t}"),
                offset: None,
            })
        }
        t => Err(protocol(format!("unknown nbd reply chunk type {t}"))),
    }
}

/// Where a data or hole chunk lands in a read buffer: checks `[offset, offset + len)` lies inside
/// the request `[req_offset, req_offset + req_len)` and returns the start index.
///
/// # Errors
/// [`ErrorCode::NbdProtocol`] for chunks outside the request.
pub fn chunk_range(req_offset: u64, req_len: u32, offset: u64, len: u32) -> Result<usize> {
    let end = offset.checked_add(u64::from(len));
    let req_end = req_offset.saturating_add(u64::from(req_len));
    match end {
        Some(end) if offset >= req_offset && end <= req_end && len > 0 => Ok((offset - req_offset) as usize),
        _ => Err(protocol(format!("nbd chunk [{offset}, +{len}) outside the request [{req_offset}, +{req_len})"))),
    }
}

/// Check the chunks a structured read returned tile the request without overlap.
///
/// # Errors
/// [`ErrorCode::NbdProtocol`] for overlapping chunks or gaps.
pub fn check_coverage(ranges: &mut [(usize, usize)], total: usize) -> Result<()> {
    ranges.sort_unstable();
    let mut at = 0usize;
    for &(start, len) in ranges.iter() {
        if start != at {
            return Err(protocol(if start < at {
                "nbd read reply chunks overlap"
            } else {
                "nbd read reply leaves a gap"
            }));
        }
        at = start + len;
    }
    if at != total {
        return Err(protocol(format!("nbd read reply covered {at} of {total} bytes")));
    }
    Ok(())
}
