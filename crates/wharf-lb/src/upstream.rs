//! Requests without a body sent to HTTP/1.1 targets directly: the request head is
//! written on a kept-alive connection and the answer is read by the task serving the
//! client, head and body, without a connection task or channels between them.
//!
//! The answer's body is framed as RFC 9112 section 6.3 says: none for HEAD and for 1xx,
//! 204 and 304 answers; chunked when Transfer-Encoding ends in chunked; Content-Length
//! otherwise; else up to the end of the connection. A connection goes back to its
//! target only when its answer was read exactly to its end, it said nothing of closing
//! and nothing more arrived after it.
//!
//! Requests with a body, and targets speaking h2c, go through hyper's client instead
//! ([`crate::proxy`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version};
use hyper::body::Frame;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::routing::TargetState;

/// The largest answer head read.
const MAX_HEAD: usize = 64 * 1024;
/// The longest chunk-size line or trailer line accepted.
const MAX_LINE: usize = 4096;
/// How much is read from a target at a time.
const READ_SIZE: usize = 16 * 1024;

/// A kept-alive connection to a target with what has been read from it and not used.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    buffer: BytesMut,
}

impl Conn {
    /// A connection over `stream`.
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buffer: BytesMut::with_capacity(READ_SIZE),
        }
    }

    /// Whether the connection looks usable after a rest: nothing, not even its end,
    /// has been seen arriving since its last answer. (An end arriving after this check
    /// is caught by [`Failure::ClosedEarly`].) When the task's cooperative budget is
    /// spent, tokio answers "not ready" whatever the socket holds, so the connection
    /// is not trusted then.
    pub fn is_quiet(&self) -> bool {
        if !self.buffer.is_empty() || !tokio::task::coop::has_budget_remaining() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        self.stream.poll_read_ready(&mut cx).is_pending()
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.buffer.capacity() - self.buffer.len() < READ_SIZE / 4 {
            self.buffer.reserve(READ_SIZE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.buffer)
    }
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum Failure {
    /// The connection ended before the first byte of an answer: a request without a
    /// body on a connection the target had just closed may be sent again.
    ClosedEarly,
    /// A broken or unreadable answer.
    Broken(String),
}

/// How an answer's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    /// Chunked, at this point of the chunk grammar.
    Chunked(ChunkState),
    /// Up to the end of the connection.
    UntilClose,
    /// Read to its end.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// This many bytes of chunk data are left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
}

/// Writes `head` (a request without a body) and reads the answer's head.
/// Interim 1xx answers are skipped.
pub async fn exchange(
    conn: &mut Conn,
    head: &[u8],
    head_request: bool,
) -> Result<(http::response::Parts, Body), Failure> {
    conn.stream
        .write_all(head)
        .await
        .map_err(|_| Failure::ClosedEarly)?;
    // Whether any byte of an answer (an interim one included) has come: from then on
    // the request is never sent again.
    let mut answered = false;
    loop {
        if let Some(parsed) = parse_head(&mut conn.buffer, head_request)? {
            return Ok(parsed);
        }
        if conn.buffer.len() > MAX_HEAD {
            return Err(Failure::Broken("the answer's head is too large".into()));
        }
        let read = std::future::poll_fn(|cx| conn.poll_fill(cx)).await;
        match read {
            Ok(0) if !answered => return Err(Failure::ClosedEarly),
            Ok(0) => return Err(Failure::Broken("the answer ended within its head".into())),
            Ok(_) => answered = true,
            Err(error) if !answered => {
                tracing::trace!(%error, "target connection failed before answering");
                return Err(Failure::ClosedEarly);
            }
            Err(error) => return Err(Failure::Broken(error.to_string())),
        }
    }
}

/// What the head of an answer says, once it is whole in `buffer` (which then starts
/// at the body).
fn parse_head(
    buffer: &mut BytesMut,
    head_request: bool,
) -> Result<Option<(http::response::Parts, Body)>, Failure> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut response = httparse::Response::new(&mut headers);
        let length = match response.parse(buffer) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(error) => return Err(Failure::Broken(format!("unparsable answer: {error}"))),
        };
        let code = response.code.unwrap_or(0);
        let status =
            StatusCode::from_u16(code).map_err(|_| Failure::Broken(format!("status {code}")))?;
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(Failure::Broken("the target switched protocols".into()));
            }
            // 100 Continue, 103 Early Hints…: the final answer follows.
            buffer.advance(length);
            continue;
        }
        let http11 = response.version == Some(1);
        let mut map = HeaderMap::with_capacity(response.headers.len());
        let mut says_close = false;
        let mut says_keep_alive = false;
        let mut chunked = false;
        let mut transfer_encoded = false;
        let mut content_length: Option<u64> = None;
        for h in response.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| Failure::Broken(format!("bad header name {:?}", h.name)))?;
            let value = HeaderValue::from_bytes(h.value)
                .map_err(|_| Failure::Broken(format!("bad value of {}", h.name)))?;
            if name == header::CONNECTION {
                match value.to_str() {
                    Ok(tokens) => {
                        for token in tokens.split(',').map(str::trim) {
                            if token.eq_ignore_ascii_case("close") {
                                says_close = true;
                            } else if token.eq_ignore_ascii_case("keep-alive") {
                                says_keep_alive = true;
                            }
                        }
                    }
                    // Unreadable: take it as the safe choice.
                    Err(_) => says_close = true,
                }
            } else if name == header::TRANSFER_ENCODING {
                transfer_encoded = true;
                // Only the last coding says whether the body is chunked.
                chunked = value
                    .to_str()
                    .ok()
                    .and_then(|v| v.rsplit(',').next())
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            } else if name == header::CONTENT_LENGTH {
                let parsed = std::str::from_utf8(h.value)
                    .ok()
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| Failure::Broken("bad Content-Length".into()))?;
                if content_length.is_some_and(|earlier| earlier != parsed) {
                    return Err(Failure::Broken("conflicting Content-Length".into()));
                }
                content_length = Some(parsed);
            }
            map.append(name, value);
        }
        buffer.advance(length);
        // Close after this answer when it says so, when HTTP/1.0 does not ask to keep
        // alive, and when its framing is doubtful (RFC 9112 6.1 and 6.3: Transfer-
        // Encoding on HTTP/1.0, or with a Content-Length).
        let close = says_close
            || (!http11 && !says_keep_alive)
            || (transfer_encoded && (!http11 || content_length.is_some()));
        let no_body =
            head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        let framing = if no_body {
            Framing::Done
        } else if transfer_encoded {
            if chunked {
                Framing::Chunked(ChunkState::Size)
            } else {
                Framing::UntilClose
            }
        } else if let Some(length) = content_length {
            if length == 0 {
                Framing::Done
            } else {
                Framing::Length(length)
            }
        } else {
            Framing::UntilClose
        };
        if transfer_encoded {
            // The body is passed on decoded; its length is whatever it turns out to be.
            map.remove(header::CONTENT_LENGTH);
        }
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.status = status;
        parts.version = Version::HTTP_11;
        parts.headers = map;
        return Ok(Some((
            parts,
            Body {
                framing,
                reusable: !close && framing != Framing::UntilClose,
            },
        )));
    }
}

/// The state of an answer's body being read.
#[derive(Debug)]
pub struct Body {
    framing: Framing,
    reusable: bool,
}

impl Body {
    /// Whether the body has been read to its end.
    pub fn is_done(&self) -> bool {
        self.framing == Framing::Done
    }

    /// How much of the body is left, when the head said its length.
    pub fn exact_length(&self) -> Option<u64> {
        match self.framing {
            Framing::Done => Some(0),
            Framing::Length(left) => Some(left),
            _ => None,
        }
    }

    /// Whether the connection may carry another request once the body is done.
    pub fn reusable(&self) -> bool {
        self.reusable
    }

    /// The next piece of the body, reading from `conn` as needed.
    pub fn poll_frame(
        &mut self,
        conn: &mut Conn,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        loop {
            match self.framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Length(left) => {
                    if conn.buffer.is_empty() {
                        match conn.poll_fill(cx) {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(Ok(0)) => return Poll::Ready(Some(Err(cut_short()))),
                            Poll::Ready(Ok(_)) => {}
                            Poll::Ready(Err(error)) => return Poll::Ready(Some(Err(error))),
                        }
                    }
                    let take = left.min(conn.buffer.len() as u64) as usize;
                    let data = conn.buffer.split_to(take).freeze();
                    self.framing = if left == take as u64 {
                        Framing::Done
                    } else {
                        Framing::Length(left - take as u64)
                    };
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::UntilClose => {
                    if conn.buffer.is_empty() {
                        match conn.poll_fill(cx) {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(Ok(0)) => {
                                self.framing = Framing::Done;
                                return Poll::Ready(None);
                            }
                            Poll::Ready(Ok(_)) => {}
                            Poll::Ready(Err(error)) => return Poll::Ready(Some(Err(error))),
                        }
                    }
                    let data = conn.buffer.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Chunked(state) => match decode_chunked(state, &mut conn.buffer) {
                    Ok(Decoded::Data(data, next)) => {
                        self.framing = Framing::Chunked(next);
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(Decoded::Moved(next)) => self.framing = Framing::Chunked(next),
                    Ok(Decoded::End) => self.framing = Framing::Done,
                    Ok(Decoded::NeedMore) => match conn.poll_fill(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(0)) => return Poll::Ready(Some(Err(cut_short()))),
                        Poll::Ready(Ok(_)) => {}
                        Poll::Ready(Err(error)) => return Poll::Ready(Some(Err(error))),
                    },
                    Err(message) => {
                        return Poll::Ready(Some(Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            message,
                        ))))
                    }
                },
            }
        }
    }
}

fn cut_short() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "the target's answer ended before its body did",
    )
}

/// One step of decoding a chunked body from `buffer`.
#[derive(Debug, PartialEq, Eq)]
enum Decoded {
    /// Some chunk data, and the state after it.
    Data(Bytes, ChunkState),
    /// Framing consumed; go on from this state.
    Moved(ChunkState),
    /// The body (trailers included) is over.
    End,
    /// `buffer` holds too little to go on.
    NeedMore,
}

fn decode_chunked(state: ChunkState, buffer: &mut BytesMut) -> Result<Decoded, String> {
    match state {
        // httparse takes an empty line for a size of 0; a size has at least one digit.
        ChunkState::Size if buffer.first().is_some_and(|b| !b.is_ascii_hexdigit()) => {
            Err("bad chunk size".into())
        }
        ChunkState::Size => match httparse::parse_chunk_size(buffer) {
            Ok(httparse::Status::Complete((used, size))) => {
                buffer.advance(used);
                Ok(Decoded::Moved(if size == 0 {
                    ChunkState::Trailers
                } else {
                    ChunkState::Data(size)
                }))
            }
            Ok(httparse::Status::Partial) if buffer.len() > MAX_LINE => {
                Err("chunk-size line too long".into())
            }
            Ok(httparse::Status::Partial) => Ok(Decoded::NeedMore),
            Err(_) => Err("bad chunk size".into()),
        },
        ChunkState::Data(left) => {
            if buffer.is_empty() {
                return Ok(Decoded::NeedMore);
            }
            let take = left.min(buffer.len() as u64) as usize;
            let data = buffer.split_to(take).freeze();
            let next = if left == take as u64 {
                ChunkState::DataEnd
            } else {
                ChunkState::Data(left - take as u64)
            };
            Ok(Decoded::Data(data, next))
        }
        ChunkState::DataEnd => {
            if buffer.len() < 2 {
                return Ok(Decoded::NeedMore);
            }
            if &buffer[..2] != b"\r\n" {
                return Err("chunk data not followed by CRLF".into());
            }
            buffer.advance(2);
            Ok(Decoded::Moved(ChunkState::Size))
        }
        ChunkState::Trailers => {
            let Some(end) = buffer.windows(2).position(|w| w == b"\r\n") else {
                return if buffer.len() > MAX_LINE {
                    Err("trailer line too long".into())
                } else {
                    Ok(Decoded::NeedMore)
                };
            };
            buffer.advance(end + 2);
            // Trailer fields are dropped; the empty line ends the body.
            Ok(if end == 0 {
                Decoded::End
            } else {
                Decoded::Moved(ChunkState::Trailers)
            })
        }
    }
}

/// A connection with its answer's body being read, going back to its target when the
/// body was read to its end.
#[derive(Debug)]
pub struct Reading {
    /// The connection (taken back when the body ends).
    pub conn: Option<Conn>,
    /// The body's state.
    pub body: Body,
    /// The target, for its idle connections.
    pub state: Arc<TargetState>,
    /// The address the connection leads to.
    pub address: Arc<str>,
}

impl Reading {
    /// The next piece of the body; at its end the connection goes back to the target.
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = self.body.poll_frame(conn, cx);
        if self.body.is_done() {
            self.release();
        }
        polled
    }

    /// Hands the connection back if its answer is over and it may be used again.
    pub fn release(&mut self) {
        if !self.body.is_done() {
            return;
        }
        if let Some(conn) = self.conn.take() {
            if self.body.reusable() && conn.buffer.is_empty() {
                self.state.idle.put_raw(&self.address, conn);
            }
        }
    }
}

/// The head of a request without a body, as sent to an HTTP/1.1 target.
pub fn request_head(method: &http::Method, path_and_query: &str, headers: &HeaderMap) -> Vec<u8> {
    let mut head = Vec::with_capacity(128 + headers.len() * 48);
    head.extend_from_slice(method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(path_and_query.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Decodes a whole chunked body fed in pieces split at `cuts`; returns it and how
    /// many bytes after it were not consumed (in the buffer or not yet fed).
    fn decode_all(encoded: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, usize), String> {
        let mut buffer = BytesMut::new();
        let mut out = Vec::new();
        let mut state = ChunkState::Size;
        let mut fed = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (encoded.len() + 1)).collect();
        points.sort_unstable();
        points.push(encoded.len());
        let mut next = points.into_iter();
        loop {
            match decode_chunked(state, &mut buffer)? {
                Decoded::Data(data, s) => {
                    out.extend_from_slice(&data);
                    state = s;
                }
                Decoded::Moved(s) => state = s,
                Decoded::End => return Ok((out, buffer.len() + encoded.len() - fed)),
                Decoded::NeedMore => {
                    let Some(until) = next.find(|p| *p > fed) else {
                        return Err("ran out of input".into());
                    };
                    buffer.extend_from_slice(&encoded[fed..until]);
                    fed = until;
                }
            }
        }
    }

    fn encode(body: &[u8], sizes: &[usize], trailers: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = body;
        let mut sizes = sizes.iter().cycle();
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
            out.extend_from_slice(format!("{n:X};ext=1\r\n").as_bytes());
            out.extend_from_slice(&rest[..n]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[n..];
        }
        out.extend_from_slice(b"0\r\n");
        if trailers {
            out.extend_from_slice(b"x-checksum: 1\r\nx-more: 2\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    proptest! {
        #[test]
        fn chunked_bodies_decode_whatever_the_chunk_and_read_boundaries(
            body in proptest::collection::vec(any::<u8>(), 0..5000),
            sizes in proptest::collection::vec(1usize..700, 1..8),
            cuts in proptest::collection::vec(0usize..10_000, 0..40),
            trailers in any::<bool>(),
        ) {
            let mut encoded = encode(&body, &sizes, trailers);
            // What follows the body stays in the buffer for the next answer.
            encoded.extend_from_slice(b"HTTP/1.1");
            let (decoded, left) = decode_all(&encoded, &cuts).unwrap();
            prop_assert_eq!(decoded, body);
            prop_assert_eq!(left, 8);
        }

        #[test]
        fn truncated_or_corrupted_chunked_bodies_are_never_taken_whole_or_panic(
            body in proptest::collection::vec(any::<u8>(), 1..2000),
            sizes in proptest::collection::vec(1usize..300, 1..5),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
        ) {
            let encoded = encode(&body, &sizes, false);
            // Cut short anywhere: never a whole body.
            let at = cut.index(encoded.len());
            prop_assert!(decode_all(&encoded[..at], &[]).is_err());
            // One byte changed anywhere: an error or some body, never a panic.
            let mut corrupted = encoded.clone();
            let i = flip.index(corrupted.len());
            corrupted[i] ^= 0x40;
            let _ = decode_all(&corrupted, &[3, 17]);
        }

        #[test]
        fn answer_heads_parse_or_refuse_without_panicking(
            head in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let mut buffer = BytesMut::from(&head[..]);
            let _ = parse_head(&mut buffer, false);
        }
    }

    fn head_of(text: &str, head_request: bool) -> (http::response::Parts, Body, usize) {
        let mut buffer = BytesMut::from(text.as_bytes());
        let (parts, body) = parse_head(&mut buffer, head_request).unwrap().unwrap();
        (parts, body, buffer.len())
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let (parts, body, left) =
            head_of("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", false);
        assert_eq!(parts.status, 200);
        assert_eq!(body.framing, Framing::Length(5));
        assert!(body.reusable());
        assert_eq!(left, 5);

        let (parts, body, _) = head_of(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 9\r\n\r\n",
            false,
        );
        assert_eq!(body.framing, Framing::Chunked(ChunkState::Size));
        assert!(parts.headers.get("content-length").is_none());

        let (_, body, _) = head_of("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", false);
        assert_eq!(body.framing, Framing::UntilClose);
        assert!(!body.reusable());

        let (_, body, _) = head_of("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!(body.framing, Framing::UntilClose);

        let (_, body, _) = head_of("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", true);
        assert!(body.is_done());
        assert!(body.reusable());

        for status in ["204 No Content", "304 Not Modified"] {
            let (_, body, _) = head_of(&format!("HTTP/1.1 {status}\r\n\r\n"), false);
            assert!(body.is_done(), "{status}");
        }

        let (_, body, _) = head_of(
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n",
            false,
        );
        assert!(!body.reusable());
        let (_, body, _) = head_of("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", false);
        assert!(!body.reusable());
        let (_, body, _) = head_of(
            "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n",
            false,
        );
        assert!(body.reusable());

        // Doubtful framing: decoded as chunked, but the connection is not used again.
        let (_, body, _) = head_of(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n",
            false,
        );
        assert_eq!(body.framing, Framing::Chunked(ChunkState::Size));
        assert!(!body.reusable());
        let (_, body, _) = head_of(
            "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n",
            false,
        );
        assert!(!body.reusable());
        // Close wins over keep-alive, whatever the order.
        let (_, body, _) = head_of(
            "HTTP/1.0 200 OK\r\nconnection: close, keep-alive\r\ncontent-length: 1\r\n\r\n",
            false,
        );
        assert!(!body.reusable());
        let mut empty_size = BytesMut::from(&b"\r\n"[..]);
        assert!(decode_chunked(ChunkState::Size, &mut empty_size).is_err());

        // Interim answers are skipped.
        let (parts, body, _) = head_of(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n",
            false,
        );
        assert_eq!(parts.status, 201);
        assert!(body.is_done());

        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
        ] {
            let mut buffer = BytesMut::from(bad.as_bytes());
            assert!(parse_head(&mut buffer, false).is_err(), "{bad:?}");
        }
        let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-le"[..]);
        assert!(parse_head(&mut partial, false).unwrap().is_none());
    }

    #[test]
    fn request_heads_are_written_in_origin_form() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("example.com"));
        headers.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        let head = request_head(&http::Method::GET, "/a?b=c", &headers);
        assert_eq!(
            head,
            b"GET /a?b=c HTTP/1.1\r\nhost: example.com\r\nx-forwarded-for: 10.0.0.1\r\n\r\n"
        );
    }
}
