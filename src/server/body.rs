//! Request bodies: media types, the size limit, reading against a deadline, and raw versus
//! multipart images.
//!
//! The limit is checked twice: from `Content-Length` before a byte is read (so a too-large
//! upload is refused at once, and `Expect: 100-continue` clients never send it), and while
//! reading, for chunked bodies that declare no length. The reading is async (it runs on the I/O
//! runtime, so a slow client costs a socket, not a thread); what is done with the bytes
//! ([`image_bytes`], multipart parsing) is a pure function over memory.

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body;
use tokio::time::Instant;

use super::error::ServerError;

/// How the image travels in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// The body is the image (`image/*`, `application/octet-stream`, or no `Content-Type`).
    Raw,
    /// `multipart/form-data` with this boundary.
    Multipart(String),
}

/// What the handlers may know about a body before it is read.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BodyInfo<'a> {
    /// `Content-Type`, if sent (and valid text).
    pub(crate) content_type: Option<&'a str>,
    /// `Content-Length`, if sent (`None` for chunked bodies).
    pub(crate) declared: Option<u64>,
    /// `Inference-Header-Content-Length` (Open Inference Protocol binary data), if sent.
    pub(crate) inference_header_length: Option<&'a str>,
}

/// Decides raw versus multipart from `Content-Type`; anything else is a 415.
pub(crate) fn kind(info: &BodyInfo<'_>) -> Result<BodyKind, ServerError> {
    match info.content_type {
        None => Ok(BodyKind::Raw),
        Some(content_type) => kind_of(content_type),
    }
}

fn kind_of(content_type: &str) -> Result<BodyKind, ServerError> {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence.starts_with("image/") || essence == "application/octet-stream" {
        return Ok(BodyKind::Raw);
    }
    if essence == "multipart/form-data" {
        return multer::parse_boundary(content_type)
            .map(BodyKind::Multipart)
            .map_err(|e| ServerError::BadMultipart(format!("Content-Type {content_type:?}: {e}")));
    }
    Err(ServerError::UnsupportedMediaType(content_type.to_string()))
}

/// 413 from `Content-Length` alone, before reading anything.
pub(crate) fn check_declared_length(info: &BodyInfo<'_>, limit: u64) -> Result<(), ServerError> {
    match info.declared {
        Some(length) if length > limit => Err(ServerError::PayloadTooLarge { limit }),
        _ => Ok(()),
    }
}

/// Reads a whole body of `declared` bytes (or to the end of a chunked body), refusing more than
/// `limit` as it arrives, and giving up at `deadline` (408).
pub(crate) async fn read_limited<B>(
    body: B,
    declared: Option<u64>,
    limit: u64,
    deadline: Option<Instant>,
) -> Result<Bytes, ServerError>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    if declared.is_some_and(|n| n > limit) {
        return Err(ServerError::PayloadTooLarge { limit });
    }
    let capacity = declared.unwrap_or(64 << 10).min(limit) as usize;
    let mut received = BytesMut::with_capacity(capacity);
    let mut body = std::pin::pin!(body);
    loop {
        let frame = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(frame) => frame,
                Err(_) => {
                    return Err(ServerError::RequestTimeout {
                        received: received.len(),
                    })
                }
            },
            None => body.frame().await,
        };
        match frame {
            None => break,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if (received.len() + data.len()) as u64 > limit {
                        return Err(ServerError::PayloadTooLarge { limit });
                    }
                    received.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => {
                return Err(ServerError::IncompleteBody(format!(
                    "reading the request body failed after {} bytes: {e}",
                    received.len()
                )))
            }
        }
    }
    if let Some(n) = declared {
        if received.len() as u64 != n {
            return Err(ServerError::IncompleteBody(format!(
                "the body ended after {} of the {n} bytes its Content-Length announced",
                received.len()
            )));
        }
    }
    Ok(received.freeze())
}

/// Reads and throws away an unwanted body of at most `bound` bytes before `deadline`, so the
/// connection can serve its next request; `false` (close the connection) when the body is
/// longer, broken or late. A body is never drained beyond `bound`.
pub(crate) async fn discard<B>(body: B, bound: u64, deadline: Instant) -> bool
where
    B: Body<Data = Bytes>,
{
    if body.is_end_stream() {
        return true;
    }
    if body.size_hint().lower() > bound {
        return false;
    }
    let mut body = std::pin::pin!(body);
    let mut seen = 0u64;
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(None) => return true,
            Ok(Some(Ok(frame))) => {
                seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                if seen > bound {
                    return false;
                }
            }
            Ok(Some(Err(_))) | Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};
    use hyper::body::Frame;
    use std::convert::Infallible;

    #[test]
    fn media_types() {
        assert_eq!(kind_of("image/jpeg").unwrap(), BodyKind::Raw);
        assert_eq!(kind_of("Image/PNG; q=1").unwrap(), BodyKind::Raw);
        assert_eq!(kind_of("application/octet-stream").unwrap(), BodyKind::Raw);
        assert_eq!(
            kind_of("multipart/form-data; boundary=abc").unwrap(),
            BodyKind::Multipart("abc".into())
        );
        assert_eq!(
            kind_of("multipart/form-data").unwrap_err().http_status(),
            400
        );
        assert_eq!(kind_of("text/plain").unwrap_err().http_status(), 415);
        assert_eq!(
            kind_of("application/x-www-form-urlencoded")
                .unwrap_err()
                .http_status(),
            415
        );
        let info = BodyInfo {
            content_type: None,
            declared: Some(10),
            inference_header_length: None,
        };
        assert_eq!(kind(&info).unwrap(), BodyKind::Raw);
        assert_eq!(
            check_declared_length(&info, 9).unwrap_err().http_status(),
            413
        );
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// A chunked body: these pieces, then the end.
    fn chunks(pieces: usize, size: usize) -> impl Body<Data = Bytes, Error = Infallible> {
        let frames = (0..pieces).map(move |_| Ok(Frame::data(Bytes::from(vec![7u8; size]))));
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[test]
    fn limits_while_reading() {
        let data = Bytes::from_static(&[7u8; 100]);
        let read = |declared, limit| {
            block_on(read_limited(Full::new(data.clone()), declared, limit, None))
        };
        assert_eq!(read(None, 100).unwrap().len(), 100);
        assert_eq!(read(None, 99).unwrap_err().http_status(), 413);
        assert_eq!(read(Some(100), 99).unwrap_err().http_status(), 413);
        assert_eq!(read(Some(150), 1000).unwrap_err().code(), "incomplete_body");
        // A chunked body is cut as soon as it passes the limit.
        let e = block_on(read_limited(chunks(1000, 1000), None, 5000, None)).unwrap_err();
        assert_eq!(e.http_status(), 413);
        assert_eq!(
            block_on(read_limited(chunks(5, 1000), None, 5000, None))
                .unwrap()
                .len(),
            5000
        );
    }

    #[test]
    fn a_body_that_never_ends_times_out() {
        let pending = StreamBody::new(futures_util::stream::pending::<
            Result<Frame<Bytes>, Infallible>,
        >());
        let e = block_on(async {
            let deadline = Instant::now() + std::time::Duration::from_millis(50);
            read_limited(pending, None, 10, Some(deadline)).await
        })
        .unwrap_err();
        assert_eq!(e.http_status(), 408);
    }

    #[test]
    fn discarding_is_bounded() {
        let soon = || Instant::now() + std::time::Duration::from_secs(1);
        assert!(block_on(async {
            discard(chunks(3, 1000), 64 << 10, soon()).await
        }));
        assert!(!block_on(async {
            discard(chunks(100, 1000), 64 << 10, soon()).await
        }));
        let big = Full::new(Bytes::from(vec![0u8; 100 << 10]));
        assert!(!block_on(async { discard(big, 64 << 10, soon()).await }));
    }
}
