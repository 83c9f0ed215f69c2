//! The images of a `multipart/form-data` body, for requests that carry several.
//!
//! Which parts are images: every part named `image` (curl: `-F image=@a.jpg -F image=@b.jpg`);
//! when there is none, every file part (any field name). A body with one image is answered as
//! before; several are a batch. Pure: works on the whole body already in memory.

use std::convert::Infallible;

use bytes::Bytes;

use super::error::ServerError;

/// One image part.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ImagePart {
    /// The part's file name, if it had one (echoed in batch answers).
    pub(crate) file_name: Option<String>,
    pub(crate) bytes: Vec<u8>,
}

struct Part {
    name: Option<String>,
    file_name: Option<String>,
    bytes: Bytes,
}

fn parts(body: Bytes, boundary: &str) -> Result<Vec<Part>, ServerError> {
    let bad = |e: multer::Error| ServerError::BadMultipart(format!("multipart body: {e}"));
    let stream = futures_util::stream::once(async move { Ok::<_, Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    futures_executor::block_on(async {
        let mut parts = Vec::new();
        while let Some(field) = multipart.next_field().await.map_err(bad)? {
            let name = field.name().map(str::to_string);
            let file_name = field.file_name().map(str::to_string);
            let bytes = field.bytes().await.map_err(bad)?;
            parts.push(Part {
                name,
                file_name,
                bytes,
            });
        }
        Ok(parts)
    })
}

/// The image parts of a multipart body, in body order.
pub(crate) fn images(body: Bytes, boundary: &str) -> Result<Vec<ImagePart>, ServerError> {
    let parts = parts(body, boundary)?;
    let named_image = parts.iter().any(|p| p.name.as_deref() == Some("image"));
    let chosen: Vec<ImagePart> = parts
        .iter()
        .filter(|p| {
            if named_image {
                p.name.as_deref() == Some("image")
            } else {
                p.file_name.is_some()
            }
        })
        .map(|p| ImagePart {
            file_name: p.file_name.clone(),
            bytes: p.bytes.to_vec(),
        })
        .collect();
    if chosen.is_empty() {
        let names: Vec<String> = parts
            .iter()
            .map(|p| p.name.clone().unwrap_or_else(|| "(unnamed)".into()))
            .collect();
        return Err(ServerError::BadMultipart(format!(
            "the multipart body has no field `image` and no file part (fields: {}); send each \
             image as a file field named `image`",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        )));
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(parts: &[(&str, Option<&str>, &[u8])]) -> Bytes {
        let mut body = Vec::new();
        for (name, file, data) in parts {
            body.extend_from_slice(b"--B0\r\n");
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
        body.extend_from_slice(b"--B0--\r\n");
        body.into()
    }

    fn bytes_of(parts: Vec<ImagePart>) -> Vec<Vec<u8>> {
        parts.into_iter().map(|p| p.bytes).collect()
    }

    #[test]
    fn every_image_field_in_order() {
        let body = form(&[
            ("image", Some("a.jpg"), b"A"),
            ("note", None, b"hi"),
            ("other", Some("x.jpg"), b"X"),
            ("image", Some("b.jpg"), b"B"),
            ("image", None, b"C"),
        ]);
        let images = images(body, "B0").unwrap();
        assert_eq!(images[0].file_name.as_deref(), Some("a.jpg"));
        assert_eq!(bytes_of(images), [b"A", b"B", b"C"]);
    }

    #[test]
    fn without_image_fields_every_file_part() {
        let body = form(&[
            ("x", Some("1.png"), b"1"),
            ("note", None, b"hi"),
            ("y", Some("2.png"), b"2"),
        ]);
        assert_eq!(bytes_of(images(body, "B0").unwrap()), [b"1", b"2"]);
        let e = images(form(&[("note", None, b"hi")]), "B0").unwrap_err();
        assert_eq!(e.code(), "bad_multipart");
        assert!(e.to_string().contains("note"), "{e}");
        assert_eq!(
            images(Bytes::from_static(b"junk"), "B0")
                .unwrap_err()
                .http_status(),
            400
        );
    }
}
