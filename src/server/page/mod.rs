//! `GET /`: one page to try the service from a browser, embedded in the binary.
//!
//! The page is `index.html` with `app.css` and `app.js` inlined at start-up; nothing is
//! fetched from anywhere but this server's own `/v1` routes. The Content-Security-Policy
//! allows exactly those two inline blocks (by their sha256), `blob:` images (the preview of
//! the picked photo) and requests to this origin; everything else is refused.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use super::reply::Reply;

const HTML: &str = include_str!("index.html");
const CSS: &str = include_str!("app.css");
const JS: &str = include_str!("app.js");

/// The assembled page and its Content-Security-Policy.
struct Page {
    html: Vec<u8>,
    csp: String,
}

fn page() -> &'static Page {
    static PAGE: OnceLock<Page> = OnceLock::new();
    PAGE.get_or_init(|| Page {
        html: HTML
            .replace("/*{{style}}*/", CSS)
            .replace("/*{{script}}*/", JS)
            .into_bytes(),
        csp: csp(CSS, JS),
    })
}

/// The policy: only these exact inline blocks run, only this origin is reachable.
fn csp(css: &str, js: &str) -> String {
    format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; img-src blob:; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        base64(&Sha256::digest(js.as_bytes())),
        base64(&Sha256::digest(css.as_bytes()))
    )
}

/// Standard base64 with padding (what CSP hash sources use).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The page, with its policy.
pub(crate) fn index() -> Reply {
    let page = page();
    Reply::text(200, "text/html; charset=utf-8", page.html.clone())
        .with_header("Content-Security-Policy", page.csp.clone())
        .with_header("X-Content-Type-Options", "nosniff".into())
        .with_header("Referrer-Policy", "no-referrer".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn the_page_is_self_contained_and_its_blocks_are_allowed() {
        let page = page();
        let html = String::from_utf8(page.html.clone()).unwrap();
        assert!(!html.contains("{{"), "a placeholder was not filled");
        // Exactly one inline script and one inline style, which the policy names by hash.
        assert_eq!(html.matches("<script").count(), 1);
        assert_eq!(html.matches("<style").count(), 1);
        let script = html
            .split("<script>")
            .nth(1)
            .unwrap()
            .split("</script>")
            .next()
            .unwrap();
        let style = html
            .split("<style>")
            .nth(1)
            .unwrap()
            .split("</style>")
            .next()
            .unwrap();
        assert_eq!(script, JS);
        assert_eq!(style, CSS);
        assert!(page.csp.contains(&base64(&Sha256::digest(JS.as_bytes()))));
        // Nothing from elsewhere: no absolute URLs, no inline handlers.
        for needle in [
            "http://",
            "https://",
            "//cdn",
            " onclick=",
            " onload=",
            "src=\"/",
        ] {
            assert!(!html.contains(needle), "{needle}");
        }
        assert!(page.csp.starts_with("default-src 'none'"));
    }
}
