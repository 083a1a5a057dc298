//! The fixed newstyle handshake: greeting, options (structured replies, meta contexts,
//! `STARTTLS`) and export selection, up to the transmission phase.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::proto::*;
use super::{ExportInfo, NbdOptions};
use crate::error::{Error, ErrorCode, Result};

pub(super) fn io_connect(context: String, e: std::io::Error) -> Error {
    Error::new(ErrorCode::NbdConnect, context).with_source(e)
}

pub(super) fn protocol(msg: impl Into<String>) -> Error {
    Error::new(ErrorCode::NbdProtocol, msg)
}

async fn read_option_reply<S: AsyncRead + Unpin>(s: &mut S, option: u32) -> Result<(OptionReplyHeader, Vec<u8>)> {
    let mut h = [0u8; 20];
    s.read_exact(&mut h).await.map_err(|e| io_connect("reading nbd option reply".into(), e))?;
    let h = parse_option_reply(&h, option)?;
    let mut data = vec![0u8; h.len as usize];
    s.read_exact(&mut data).await.map_err(|e| io_connect("reading nbd option reply".into(), e))?;
    Ok((h, data))
}

async fn send_option<S: AsyncWrite + Unpin>(s: &mut S, option: u32, data: &[u8]) -> Result<()> {
    s.write_all(&encode_option(option, data)).await.map_err(|e| io_connect("sending nbd option".into(), e))?;
    s.flush().await.map_err(|e| io_connect("sending nbd option".into(), e))
}

fn option_refused(what: &str, reply_type: u32, data: &[u8]) -> Error {
    let text = String::from_utf8_lossy(&data[..data.len().min(256)]).into_owned();
    let mut msg = format!("nbd server refused {what}: {}", option_error_name(reply_type));
    if !text.is_empty() {
        msg.push_str(": ");
        msg.push_str(&text);
    }
    Error::new(ErrorCode::NbdRequest, msg)
}

/// Run the fixed newstyle handshake on `s` up to the transmission phase.
///
/// Asks for structured replies and the `base:allocation` context (plus the dirty bitmap from
/// `opts`), then selects `export` with `NBD_OPT_GO`, falling back to `NBD_OPT_EXPORT_NAME` only
/// when the server answers GO with `NBD_REP_ERR_UNSUP`. TLS (`opts.tls`) needs the stream to
/// change type mid-way: [`NbdTransport::connect_with`](super::NbdTransport::connect_with) does
/// that.
///
/// # Errors
/// [`ErrorCode::NbdProtocol`] for a malformed or non-newstyle server, [`ErrorCode::NbdRequest`]
/// when the server refuses the export or the dirty bitmap, [`ErrorCode::NbdTls`] when it
/// requires TLS, [`ErrorCode::NbdConnect`] when the connection drops, [`ErrorCode::BadUrl`] for
/// an export name over 4096 bytes, [`ErrorCode::TransportUnsupported`] when `opts` asks for TLS.
///
/// # Cancel safety
/// Not cancel safe: a dropped handshake leaves the stream mid-negotiation; discard it.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    export: &str,
    opts: &NbdOptions,
) -> Result<ExportInfo> {
    if opts.tls.is_some() {
        return Err(Error::new(ErrorCode::TransportUnsupported, "nbd tls needs NbdTransport::connect_with"));
    }
    let no_zeroes = greet(s).await?;
    negotiate(s, export, opts, no_zeroes).await
}

/// Read the greeting and answer with our flags; returns whether the server omits the 124 zero
/// bytes after `NBD_OPT_EXPORT_NAME`.
pub(super) async fn greet<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> Result<bool> {
    let mut greeting = [0u8; 18];
    s.read_exact(&mut greeting).await.map_err(|e| io_connect("reading nbd greeting".into(), e))?;
    let server_flags = parse_greeting(&greeting)?;
    let no_zeroes = server_flags & FLAG_NO_ZEROES != 0;
    let client_flags = u32::from(FLAG_FIXED_NEWSTYLE) | if no_zeroes { u32::from(FLAG_NO_ZEROES) } else { 0 };
    s.write_all(&client_flags.to_be_bytes()).await.map_err(|e| io_connect("sending nbd client flags".into(), e))?;
    Ok(no_zeroes)
}

fn tls_required() -> Error {
    Error::new(ErrorCode::NbdTls, "nbd server requires TLS: use an nbds:// or nbds+unix:// uri")
}

/// `NBD_OPT_STARTTLS`, after [`greet`]; the caller then runs the TLS handshake on `s`.
pub(super) async fn starttls<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> Result<()> {
    send_option(s, OPT_STARTTLS, &[]).await?;
    let (h, data) = read_option_reply(s, OPT_STARTTLS).await?;
    match h.reply_type {
        REP_ACK => Ok(()),
        t if t & REP_FLAG_ERROR != 0 => {
            let text = String::from_utf8_lossy(&data[..data.len().min(256)]).into_owned();
            Err(Error::new(ErrorCode::NbdTls, format!("nbd server refused STARTTLS: {} {text}", option_error_name(t))))
        }
        t => Err(protocol(format!("unexpected reply {t} to NBD_OPT_STARTTLS"))),
    }
}

/// Everything after the greeting (and after TLS, if any): options, then the export.
pub(super) async fn negotiate<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    export: &str,
    opts: &NbdOptions,
    no_zeroes: bool,
) -> Result<ExportInfo> {
    if export.len() > 4096 {
        return Err(Error::new(ErrorCode::BadUrl, "nbd export name longer than 4096 bytes"));
    }
    let mut structured = false;
    if opts.structured_replies {
        send_option(s, OPT_STRUCTURED_REPLY, &[]).await?;
        let (h, _) = read_option_reply(s, OPT_STRUCTURED_REPLY).await?;
        match h.reply_type {
            REP_ACK => structured = true,
            REP_ERR_TLS_REQD => return Err(tls_required()),
            t if t & REP_FLAG_ERROR != 0 => tracing::debug!("nbd server declined structured replies"),
            t => return Err(protocol(format!("unexpected reply {t} to NBD_OPT_STRUCTURED_REPLY"))),
        }
    }

    let mut allocation_context = None;
    let mut dirty_context = None;
    let dirty_query = opts.dirty_bitmap.as_ref().map(|b| format!("qemu:dirty-bitmap:{b}"));
    if structured {
        let mut queries = vec!["base:allocation"];
        if let Some(q) = &dirty_query {
            queries.push(q);
        }
        send_option(s, OPT_SET_META_CONTEXT, &encode_set_meta_context(export, &queries)).await?;
        loop {
            let (h, data) = read_option_reply(s, OPT_SET_META_CONTEXT).await?;
            match h.reply_type {
                REP_META_CONTEXT => {
                    let (id, name) = parse_meta_context(&data)?;
                    if name == "base:allocation" {
                        allocation_context = Some(id);
                    } else if Some(&name) == dirty_query.as_ref() {
                        dirty_context = Some(id);
                    } else {
                        tracing::debug!(context = %name, "nbd server granted a context we did not ask for");
                    }
                }
                REP_ACK => break,
                REP_ERR_TLS_REQD => return Err(tls_required()),
                t if t & REP_FLAG_ERROR != 0 => {
                    tracing::debug!(reply = option_error_name(t), "nbd server declined meta contexts");
                    break;
                }
                t => return Err(protocol(format!("unexpected reply {t} to NBD_OPT_SET_META_CONTEXT"))),
            }
        }
    }
    if let (Some(q), None) = (&dirty_query, dirty_context) {
        return Err(Error::new(ErrorCode::NbdRequest, format!("nbd server does not offer meta context {q}")));
    }

    send_option(s, OPT_GO, &encode_go(export)).await?;
    let mut export_info = None;
    let mut block_size = None;
    loop {
        let (h, data) = read_option_reply(s, OPT_GO).await?;
        match h.reply_type {
            REP_INFO => match parse_info(&data)? {
                Info::Export { size, flags } => export_info = Some((size, flags)),
                Info::BlockSize(b) => block_size = Some(b),
                Info::Other(_) => {}
            },
            REP_ACK => break,
            REP_ERR_UNSUP => {
                tracing::debug!("nbd server lacks NBD_OPT_GO, falling back to NBD_OPT_EXPORT_NAME");
                send_option(s, OPT_EXPORT_NAME, export.as_bytes()).await?;
                let mut b = [0u8; 10 + 124];
                let n = if no_zeroes { 10 } else { 134 };
                s.read_exact(&mut b[..n])
                    .await
                    .map_err(|e| io_connect(format!("nbd server closed the connection on export {export:?}"), e))?;
                let (size, flags) = parse_export_name_reply(&b[..10])?;
                return Ok(ExportInfo {
                    size,
                    flags,
                    block_size: None,
                    structured,
                    allocation_context,
                    dirty_context,
                    used_go: false,
                });
            }
            REP_ERR_TLS_REQD => return Err(tls_required()),
            t if t & REP_FLAG_ERROR != 0 => return Err(option_refused(&format!("export {export:?}"), t, &data)),
            t => return Err(protocol(format!("unexpected reply {t} to NBD_OPT_GO"))),
        }
    }
    let (size, flags) = export_info.ok_or_else(|| protocol("nbd server acknowledged GO without export info"))?;
    Ok(ExportInfo { size, flags, block_size, structured, allocation_context, dirty_context, used_go: true })
}
