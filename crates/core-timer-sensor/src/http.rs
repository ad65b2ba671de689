//! A minimal HTTP/1.1 client over `std::net`: one request per connection,
//! `Connection: close`, bounded by a timeout. Enough for a JSON API on
//! `http://`; no TLS, so no C code and nothing to cross-compile but Rust.
//!
//! The server is not trusted to be sane: the timeout bounds the whole
//! exchange (a response trickled a byte at a time ends at it), a response is
//! at most [`MAX_RESPONSE`] bytes, and a malformed one (a chunk size near
//! `usize::MAX`, say) is an error, never a panic.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Responses larger than this are refused.
pub const MAX_RESPONSE: u64 = 16 << 20;

/// An `http://host[:port][/base]` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// Host name or address.
    pub host: String,
    /// Port (80 by default).
    pub port: u16,
    /// Path prefix without a trailing `/` (often empty).
    pub base: String,
}

impl Url {
    /// Parses a base URL; only `http://` is supported.
    pub fn parse(s: &str) -> Result<Url, String> {
        let rest = if let Some(rest) = s.strip_prefix("http://") {
            rest
        } else if s.starts_with("https://") {
            return Err(format!(
                "`{s}` uses https, which this build does not speak (it carries no TLS stack); reach the API over http:// inside the cluster"
            ));
        } else {
            return Err(format!("`{s}` is not an http:// URL"));
        };
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("`{s}` has an invalid port `{p}`"))?,
            ),
            _ => (authority, 80),
        };
        if host.is_empty() {
            return Err(format!("`{s}` has no host"));
        }
        let base = path.trim_end_matches('/');
        Ok(Url {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            base: if base.is_empty() {
                String::new()
            } else {
                format!("/{base}")
            },
        })
    }
}

/// A response: status, body, and the one header the sensor acts on.
#[derive(Debug)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// `Retry-After` in its delay-seconds form (the HTTP-date form is ignored:
    /// the sensor then falls back to its own backoff).
    pub retry_after: Option<Duration>,
}

/// Sends one request and reads the whole response.
pub fn request(
    url: &Url,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
    timeout: Duration,
) -> io::Result<Response> {
    let addrs = (url.host.as_str(), url.port).to_socket_addrs()?;
    let mut last = io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} resolves to no address", url.host),
    );
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let deadline = std::time::Instant::now() + timeout;
    let mut stream = stream.ok_or(last)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;

    let mut head = format!(
        "{method} {}{path} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: attune-core-timer-sensor/{}\r\nAccept: application/json\r\nConnection: close\r\n",
        url.base,
        url.host,
        url.port,
        env!("CARGO_PKG_VERSION")
    );
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    head.push_str("\r\n");
    let mut req = head.into_bytes();
    req.extend_from_slice(body.unwrap_or_default());
    stream.write_all(&req)?;

    // One deadline for the whole response, however slowly it trickles in.
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    let timed_out = || {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the response did not complete within {}s",
                timeout.as_secs_f64()
            ),
        )
    };
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&chunk[..n]);
                if raw.len() as u64 > MAX_RESPONSE {
                    return Err(bad("response larger than 16 MiB"));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timed_out());
            }
            Err(e) => return Err(e),
        }
    }
    parse_response(&raw)
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Parses a complete HTTP/1.1 response read until the server closed.
pub fn parse_response(raw: &[u8]) -> io::Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("response ended before its headers"))?;
    let head =
        std::str::from_utf8(&raw[..end]).map_err(|_| bad("response headers are not text"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad("malformed status line"))?;
    let mut chunked = false;
    let mut length = None;
    let mut retry_after = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if k == "content-length" {
                length = v.parse::<usize>().ok();
            } else if k == "retry-after" {
                retry_after = v.parse::<u64>().ok().map(Duration::from_secs);
            }
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else {
        let n = length.unwrap_or(rest.len()).min(rest.len());
        rest[..n].to_vec()
    };
    Ok(Response {
        status,
        body,
        retry_after,
    })
}

fn dechunk(mut rest: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("truncated chunk"))?;
        let size_text =
            std::str::from_utf8(&rest[..line_end]).map_err(|_| bad("bad chunk size"))?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad("bad chunk size"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if size.checked_add(2).is_none_or(|need| rest.len() < need) {
            return Err(bad("truncated chunk"));
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            Url::parse("http://api:8080").unwrap(),
            Url {
                host: "api".into(),
                port: 8080,
                base: String::new()
            }
        );
        assert_eq!(
            Url::parse("http://127.0.0.1/attune/").unwrap().base,
            "/attune"
        );
        assert_eq!(Url::parse("http://[::1]:9000").unwrap().host, "::1");
        assert!(Url::parse("https://api").unwrap_err().contains("TLS"));
        assert!(Url::parse("api:8080").is_err());
        assert!(Url::parse("http://api:port").is_err());
    }

    #[test]
    fn parses_plain_and_chunked_responses() {
        let r = parse_response(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (201, &b"{}"[..]));
        let r = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!(r.body, b"abcde");
        assert!(parse_response(b"HTTP/1.1 200").is_err());
    }

    #[test]
    fn reads_retry_after_in_seconds_only() {
        let r = parse_response(b"HTTP/1.1 429 Too Many\r\nRetry-After: 7\r\n\r\n").unwrap();
        assert_eq!(r.retry_after, Some(Duration::from_secs(7)));
        let r = parse_response(
            b"HTTP/1.1 503 Unavailable\r\nRetry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.retry_after, None);
    }

    /// A chunk size near `usize::MAX` overflowed `size + 2` and panicked the
    /// sender thread (with `panic = "abort"`, the whole sensor).
    #[test]
    fn a_huge_chunk_size_is_an_error_not_a_panic() {
        let raw =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nabc\r\n";
        assert!(parse_response(raw).is_err());
    }

    /// A response trickled one byte at a time blocked the sender without bound.
    #[test]
    fn a_trickled_response_ends_at_the_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            for b in b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
                .iter()
                .cycle()
                .take(200)
            {
                if s.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let started = std::time::Instant::now();
        let err = request(&url, "GET", "/", None, None, Duration::from_millis(500)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
