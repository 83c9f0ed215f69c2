//! Request bodies: media types, the size limit, and raw versus multipart images.
//!
//! The limit is checked twice: from `Content-Length` before a byte is read (so a too-large
//! upload is refused at once, and `Expect: 100-continue` clients never send it), and while
//! reading, for chunked bodies that declare no length.

use std::convert::Infallible;
use std::io::{ErrorKind, Read};

use bytes::Bytes;

use crate::error::Error;

/// How the image travels in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// The body is the image (`image/*`, `application/octet-stream`, or no `Content-Type`).
    Raw,
    /// `multipart/form-data` with this boundary.
    Multipart(String),
}

fn header<'r>(request: &'r tiny_http::Request, name: &'static str) -> Option<&'r str> {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}

/// Decides raw versus multipart from `Content-Type`; anything else is a 415.
pub(crate) fn kind(request: &tiny_http::Request) -> Result<BodyKind, Error> {
    let Some(content_type) = header(request, "Content-Type") else {
        return Ok(BodyKind::Raw);
    };
    kind_of(content_type)
}

fn kind_of(content_type: &str) -> Result<BodyKind, Error> {
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
            .map_err(|e| Error::BadMultipart(format!("Content-Type {content_type:?}: {e}")));
    }
    Err(Error::UnsupportedMediaType(content_type.to_string()).into())
}

/// 413 from `Content-Length` alone, before reading anything.
pub(crate) fn check_declared_length(request: &tiny_http::Request, limit: u64) -> Result<(), Error> {
    match request.body_length() {
        Some(length) if length as u64 > limit => Err(Error::PayloadTooLarge { limit }.into()),
        _ => Ok(()),
    }
}

/// Reads the body (at most `limit` bytes) and returns the image bytes in it.
pub(crate) fn read_image(
    request: &mut tiny_http::Request,
    limit: u64,
    kind: &BodyKind,
) -> Result<Vec<u8>, Error> {
    let declared = request.body_length();
    let body = read_limited(request.as_reader(), declared, limit)?;
    match kind {
        BodyKind::Raw => Ok(body),
        BodyKind::Multipart(boundary) => multipart_image(body, boundary),
    }
}

/// Reads a whole body of `declared` bytes (or until the end of a chunked body), refusing more
/// than `limit`.
pub(crate) fn read_limited(
    reader: &mut dyn Read,
    declared: Option<usize>,
    limit: u64,
) -> Result<Vec<u8>, Error> {
    if declared.is_some_and(|n| n as u64 > limit) {
        return Err(Error::PayloadTooLarge { limit }.into());
    }
    let capacity = declared.unwrap_or(64 << 10).min(limit as usize);
    let mut body = Vec::with_capacity(capacity);
    let mut limited = reader.take(limit.saturating_add(1));
    let mut chunk = [0u8; 64 << 10];
    loop {
        match limited.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(Error::RequestTimeout {
                    received: body.len(),
                })
            }
            Err(e) => {
                return Err(Error::IncompleteBody(format!(
                    "reading the request body failed after {} bytes: {e}",
                    body.len()
                )))
            }
        }
    }
    if body.len() as u64 > limit {
        return Err(Error::PayloadTooLarge { limit }.into());
    }
    if let Some(n) = declared {
        if body.len() != n {
            return Err(Error::IncompleteBody(format!(
                "the body ended after {} of the {n} bytes its Content-Length announced",
                body.len()
            )));
        }
    }
    Ok(body)
}

/// The `image` part of a multipart body, else its first file part.
pub(crate) fn multipart_image(body: Vec<u8>, boundary: &str) -> Result<Vec<u8>, Error> {
    let bad = |e: multer::Error| Error::BadMultipart(format!("multipart body: {e}"));
    let stream = futures_util::stream::once(async move { Ok::<_, Infallible>(Bytes::from(body)) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    futures_executor::block_on(async {
        let mut first_file: Option<Bytes> = None;
        let mut names = Vec::new();
        while let Some(field) = multipart.next_field().await.map_err(bad)? {
            let name = field.name().map(str::to_string);
            if name.as_deref() == Some("image") {
                return Ok(field.bytes().await.map_err(bad)?.into());
            }
            let is_file = field.file_name().is_some();
            names.push(name.unwrap_or_else(|| "(unnamed)".into()));
            if is_file && first_file.is_none() {
                first_file = Some(field.bytes().await.map_err(bad)?);
            }
        }
        first_file.map(Vec::from).ok_or_else(|| {
            Error::BadMultipart(format!(
                "the multipart body has no field `image` and no file part (fields: {}); send \
                 the image as a file field named `image`",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (name, file, data) in parts {
            body.extend_from_slice(b"--XyZ\r\n");
            let disposition = match file {
                Some(f) => {
                    format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n")
                }
                None => format!("Content-Disposition: form-data; name=\"{name}\"\r\n"),
            };
            body.extend_from_slice(disposition.as_bytes());
            body.extend_from_slice(b"\r\n");
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"--XyZ--\r\n");
        body
    }

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
    }

    #[test]
    fn multipart_prefers_image_then_first_file() {
        let body = form(&[
            ("note", None, b"hi"),
            ("other", Some("a.jpg"), b"AAA"),
            ("image", Some("b.jpg"), b"BBB"),
        ]);
        assert_eq!(multipart_image(body, "XyZ").unwrap(), b"BBB");
        let body = form(&[
            ("note", None, b"hi"),
            ("x", Some("a.jpg"), b"AAA"),
            ("y", Some("c.jpg"), b"CCC"),
        ]);
        assert_eq!(multipart_image(body, "XyZ").unwrap(), b"AAA");
        let body = form(&[("note", None, b"hi")]);
        let e = multipart_image(body, "XyZ").unwrap_err();
        assert!(e.to_string().contains("note"), "{e}");
        assert_eq!(
            multipart_image(b"garbage".to_vec(), "XyZ")
                .unwrap_err()
                .http_status(),
            400
        );
    }

    #[test]
    fn limits_while_reading() {
        let data = [7u8; 100];
        assert_eq!(read_limited(&mut &data[..], None, 100).unwrap().len(), 100);
        assert_eq!(
            read_limited(&mut &data[..], None, 99)
                .unwrap_err()
                .http_status(),
            413
        );
        assert_eq!(
            read_limited(&mut &data[..], Some(100), 99)
                .unwrap_err()
                .http_status(),
            413
        );
        let e = read_limited(&mut &data[..], Some(150), 1000).unwrap_err();
        assert_eq!(e.code(), "incomplete_body");
    }
}
