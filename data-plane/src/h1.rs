//! HTTP/1.1 to plain-TCP upstreams, spoken by the request's own task.
//!
//! hyper's client runs every upstream connection as a task of its own and hands it each request
//! through a channel, and the response back through another: two task hand-offs, a channel block
//! per connection and the request's envelope copied through them, for an exchange that is one
//! write and one read. Here, as in Pingora, the request's task writes the request on a
//! connection it holds and reads the response itself; the response body owns the connection
//! while it streams and puts it back in the pool when the body ends cleanly.
//!
//! Used for requests whose body is already known (none, or read whole by a plugin) to endpoints
//! spoken to in the clear. Streamed request bodies, TLS and HTTP/2 upstreams, and WebSocket
//! handshakes stay on hyper's client (`pool::Sender`).
//!
//! The response head is parsed by `httparse` (the parser hyper itself uses), with hyper's
//! limits: at most [`MAX_HEADERS`] fields and [`MAX_HEAD`] bytes. The body is framed as RFC 9112
//! §6.3 says, strictly: conflicting or malformed `Content-Length` is an error, a
//! `Transfer-Encoding` wins over `Content-Length` and the connection is not reused after it, and
//! a connection is only reused when the response ended exactly where its framing said.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio_io_timeout::TimeoutStream;

use crate::pool::EndpointPool;
use crate::upstream_body::UpstreamBody;

/// Largest response head accepted (status line and fields).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most response header fields accepted (hyper's limit).
pub const MAX_HEADERS: usize = 100;
/// Longest chunk-size line (with extensions), and largest trailer section.
const MAX_CHUNK_LINE: usize = 4 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;
/// Read sizes: for a response head, and the most a body read asks for at once.
const HEAD_READ: usize = 8 * 1024;
const BODY_READ: usize = 64 * 1024;
/// A known request body up to this size is copied behind the head: one write, not two.
const COALESCE: usize = 16 * 1024;

/// Why an exchange with the upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("upstream connection: {0}")]
    Io(#[from] io::Error),
    #[error("upstream closed the connection before the response was complete")]
    Closed,
    #[error("upstream response head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("invalid upstream response: {0}")]
    Parse(#[from] httparse::Error),
    #[error("invalid upstream response: {0}")]
    Invalid(&'static str),
}

impl Error {
    /// An I/O timeout (the upstream socket's write timeout).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Io(e) if e.kind() == io::ErrorKind::TimedOut)
    }
}

/// One HTTP/1.1 connection to an upstream, idle in the pool or used by one exchange.
#[derive(Debug)]
pub struct Conn {
    io: Pin<Box<TimeoutStream<TcpStream>>>,
    /// What was read and not consumed yet; empty between exchanges.
    buf: BytesMut,
    /// The request being written; kept for the next one.
    out: Vec<u8>,
    /// Pool sweeps this connection sat idle through ([`crate::pool::Pools::sweep_idle`]).
    pub(crate) idle_sweeps: u8,
}

impl Conn {
    /// A connected stream (nodelay and write timeout already set).
    pub fn new(io: Pin<Box<TimeoutStream<TcpStream>>>) -> Box<Conn> {
        Box::new(Conn {
            io,
            buf: BytesMut::new(),
            out: Vec::new(),
            idle_sweeps: 0,
        })
    }

    /// Whether an idle connection can carry a request: the upstream has neither closed it nor
    /// sent anything unasked. Costs no system call unless the socket was reported readable.
    pub fn is_usable(&self) -> bool {
        let stream = self.io.get_ref();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            // Readiness can be left over from the last response's read: look.
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            Poll::Ready(Err(_)) => false,
        }
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < want.min(1024) {
            self.buf.reserve(want);
        }
        tokio_util::io::poll_read_buf(self.io.as_mut(), cx, &mut self.buf)
    }

    async fn fill(&mut self, want: usize) -> io::Result<usize> {
        poll_fn(|cx| self.poll_fill(cx, want)).await
    }

    async fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = poll_fn(|cx| self.io.as_mut().poll_write(cx, data)).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            data = &data[n..];
        }
        Ok(())
    }
}

/// Whether `req` can go this way: its body is none, or already read whole.
pub fn can_send(req: &Request<UpstreamBody>) -> bool {
    match req.body() {
        UpstreamBody::Empty | UpstreamBody::Buffered(_) => true,
        UpstreamBody::Client(b) => http_body::Body::is_end_stream(b),
        UpstreamBody::Limited { inner, .. } => http_body::Body::is_end_stream(inner),
    }
}

/// A failed exchange; `replayable` when the request may be sent again on another connection
/// (a pooled connection turned out closed before any of the response arrived).
#[derive(Debug)]
pub struct Failure {
    pub error: Error,
    pub replayable: bool,
}

/// Sends `req` (see [`can_send`]) on `conn` and reads the response head. `pooled`: the
/// connection was idle in `pool` (so a close before any answer may be the keep-alive race).
/// The request is borrowed: it stays where the caller keeps it for another attempt, and this
/// future (part of every request's) holds a pointer to it, not a copy.
pub async fn send(
    mut conn: Box<Conn>,
    req: &Request<UpstreamBody>,
    pool: &Arc<EndpointPool>,
    pooled: bool,
) -> Result<Response<Body>, Failure> {
    // The keep-alive race: the upstream closed the idle connection as the request went out.
    // Nothing was answered, so nothing was done; retried for methods that may be repeated.
    let replayable = pooled && crate::proxy::is_idempotent(req.method());
    let body = match req.body() {
        UpstreamBody::Buffered(Some(b)) => b.clone(),
        _ => Bytes::new(),
    };
    conn.out.clear();
    let mut out = std::mem::take(&mut conn.out);
    encode_head(req, body.len(), &mut out);
    let coalesce = body.len() <= COALESCE;
    if coalesce {
        out.extend_from_slice(&body);
    }
    let mut written = conn.write_all(&out).await;
    if written.is_ok() && !coalesce {
        written = conn.write_all(&body).await;
    }
    conn.out = out;
    if let Err(e) = written {
        return Err(Failure {
            replayable: replayable
                && matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ),
            error: Error::Io(e),
        });
    }

    let is_head = req.method() == Method::HEAD;
    let head = loop {
        match parse_head(&mut conn.buf, is_head) {
            Ok(Some(head)) => break head,
            Ok(None) => {}
            Err(error) => {
                return Err(Failure {
                    error,
                    replayable: false,
                })
            }
        }
        if conn.buf.len() >= MAX_HEAD {
            return Err(Failure {
                error: Error::HeadTooLarge,
                replayable: false,
            });
        }
        let nothing_yet = conn.buf.is_empty();
        let error = match conn.fill(HEAD_READ).await {
            Ok(0) => Error::Closed,
            Ok(_) => continue,
            Err(e) => Error::Io(e),
        };
        let raced = nothing_yet
            && match &error {
                Error::Closed => true,
                Error::Io(e) => e.kind() == io::ErrorKind::ConnectionReset,
                _ => false,
            };
        return Err(Failure {
            error,
            replayable: replayable && raced,
        });
    };

    let Head {
        status,
        version,
        headers,
        framing,
        keep_alive,
    } = head;
    let mut body = Body {
        conn: Some(conn),
        state: framing,
        keep_alive,
        pool: Arc::clone(pool),
    };
    if body.is_done() {
        body.finish();
    }
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.version_mut() = version;
    *resp.headers_mut() = headers;
    Ok(resp)
}

/// Writes the request line and fields, and the framing of a body of `body_len` bytes.
fn encode_head(req: &Request<UpstreamBody>, body_len: usize, out: &mut Vec<u8>) {
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let headers = req.headers();
    out.reserve(64 + target.len() + headers.len() * 32);
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        // Framing is this module's: the known length below.
        if name == TRANSFER_ENCODING || name == CONTENT_LENGTH {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // A body is announced by its length; an empty one too where the method expects a body.
    if body_len > 0
        || headers.contains_key(CONTENT_LENGTH)
        || !matches!(
            *req.method(),
            Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
        )
    {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A parsed response head.
#[derive(Debug)]
struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    framing: State,
    keep_alive: bool,
}

/// Parses a response head at the start of `buf` and consumes it (and any interim 1xx responses
/// before it); `None` when more bytes are needed.
fn parse_head(buf: &mut BytesMut, is_head: bool) -> Result<Option<Head>, Error> {
    loop {
        // Where each field's name and value sit in `buf`; the fields become slices of one
        // shared buffer, not copies.
        let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
        let (len, code, minor, count) = {
            let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut []);
            let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut resp,
                buf,
                &mut fields,
            )? {
                httparse::Status::Complete(len) if len > MAX_HEAD => {
                    return Err(Error::HeadTooLarge)
                }
                httparse::Status::Complete(len) => len,
                httparse::Status::Partial => return Ok(None),
            };
            let base = buf.as_ptr() as usize;
            for (span, field) in spans.iter_mut().zip(resp.headers.iter()) {
                let name = field.name.as_ptr() as usize - base;
                let value = field.value.as_ptr() as usize - base;
                *span = (
                    name as u32,
                    (name + field.name.len()) as u32,
                    value as u32,
                    (value + field.value.len()) as u32,
                );
            }
            (
                len,
                resp.code.unwrap_or(0),
                resp.version.unwrap_or(1),
                resp.headers.len(),
            )
        };
        if (100..200).contains(&code) {
            if code == 101 {
                return Err(Error::Invalid(
                    "101 Switching Protocols to a request without Upgrade",
                ));
            }
            // Interim (100 Continue, 103 Early Hints): the final response follows.
            buf.advance(len);
            continue;
        }
        let status = StatusCode::from_u16(code).map_err(|_| Error::Invalid("status code"))?;
        let head = buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(count);
        for &(ns, ne, vs, ve) in &spans[..count] {
            let name = HeaderName::from_bytes(&head[ns as usize..ne as usize])
                .map_err(|_| Error::Invalid("header name"))?;
            let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
                .map_err(|_| Error::Invalid("header value"))?;
            headers.append(name, value);
        }
        let version = if minor == 0 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        let (framing, keep_alive) = framing(&mut headers, version, status, is_head)?;
        return Ok(Some(Head {
            status,
            version,
            headers,
            framing,
            keep_alive,
        }));
    }
}

/// How the response body is delimited (RFC 9112 §6.3), and whether the connection may carry
/// another request after it.
fn framing(
    headers: &mut HeaderMap,
    version: Version,
    status: StatusCode,
    is_head: bool,
) -> Result<(State, bool), Error> {
    let mut keep_alive = version == Version::HTTP_11;
    for value in headers.get_all(CONNECTION) {
        for token in value.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.eq_ignore_ascii_case(b"close") {
                keep_alive = false;
            } else if token.eq_ignore_ascii_case(b"keep-alive") && version == Version::HTTP_10 {
                keep_alive = true;
            }
        }
    }
    if is_head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((State::Length(0), keep_alive));
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        // The last coding decides; a body that is not chunked last runs to the close.
        let mut last: &[u8] = b"";
        for value in headers.get_all(TRANSFER_ENCODING) {
            if let Some(token) = value
                .as_bytes()
                .rsplit(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
                .find(|t| !t.is_empty())
            {
                last = token;
            }
        }
        let chunked = last.eq_ignore_ascii_case(b"chunked");
        if headers.remove(CONTENT_LENGTH).is_some() || !chunked || version == Version::HTTP_10 {
            // Both framings at once, or one this hop cannot end: never reuse the connection.
            keep_alive = false;
        }
        return Ok(if chunked {
            (State::Chunked(Chunk::Size), keep_alive)
        } else {
            (State::Close, false)
        });
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let n = parse_length(item.trim_ascii())
                .ok_or(Error::Invalid("malformed Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::Invalid("conflicting Content-Length values"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(n) => (State::Length(n), keep_alive),
        None => (State::Close, false),
    })
}

/// A `Content-Length` value: decimal digits only, no sign, fits in a u64.
fn parse_length(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Where a response body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes left.
    Length(u64),
    Chunked(Chunk),
    /// Until the upstream closes.
    Close,
    Done,
    /// Ended by an error: incomplete.
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// A chunk-size line is next.
    Size,
    /// This many bytes of chunk data left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// The trailer section after the last chunk.
    Trailers,
}

/// A response body read from an upstream connection it owns; the connection goes back to its
/// pool when the body ended where its framing said, and is closed otherwise (dropped early, an
/// error, bytes past the end, `Connection: close`).
#[derive(Debug)]
pub struct Body {
    conn: Option<Box<Conn>>,
    state: State,
    keep_alive: bool,
    pool: Arc<EndpointPool>,
}

impl Body {
    fn is_done(&self) -> bool {
        matches!(self.state, State::Done | State::Length(0))
    }

    /// The body ended: the connection goes back to the pool if it is clean.
    fn finish(&mut self) {
        self.state = State::Done;
        if let Some(conn) = self.conn.take() {
            if self.keep_alive && conn.buf.is_empty() {
                self.pool.checkin_native(conn);
            }
        }
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.state = State::Failed;
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }

    /// Polls for the next frame.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match step(&mut self.state, &mut conn.buf) {
                Err(e) => return self.fail(e),
                Ok(Step::Data(data)) => {
                    if self.is_done() {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Step::Trailers(trailers)) => {
                    self.finish();
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Ok(Step::End) => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Ok(Step::More) => {
                    let want = match self.state {
                        State::Length(left) => (left as usize).clamp(1024, BODY_READ),
                        State::Close => BODY_READ,
                        _ => HEAD_READ,
                    };
                    match ready!(conn.poll_fill(cx, want)) {
                        // A body delimited by the close ends there (and is never reused).
                        Ok(0) if self.state == State::Close => {
                            self.finish();
                            return Poll::Ready(None);
                        }
                        Ok(0) => return self.fail(Error::Closed),
                        Ok(_) => {}
                        Err(e) => return self.fail(Error::Io(e)),
                    }
                }
            }
        }
    }
}

/// What the framing makes of the bytes buffered so far.
#[derive(Debug)]
enum Step {
    Data(Bytes),
    /// The trailers of a chunked body, which ends with them.
    Trailers(HeaderMap),
    End,
    /// More bytes are needed (or, for [`State::Close`], the close).
    More,
}

/// Takes the body's next piece out of `buf`: the one framing engine, which [`Body`] runs on a
/// socket and [`decode`] on bytes in memory.
fn step(state: &mut State, buf: &mut BytesMut) -> Result<Step, Error> {
    loop {
        match *state {
            State::Done | State::Failed => return Ok(Step::End),
            State::Length(0) => {
                *state = State::Done;
                return Ok(Step::End);
            }
            State::Length(left) => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let n = left.min(buf.len() as u64);
                *state = State::Length(left - n);
                return Ok(Step::Data(buf.split_to(n as usize).freeze()));
            }
            State::Close => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                return Ok(Step::Data(buf.split().freeze()));
            }
            State::Chunked(chunk) => match decode_chunk(buf, chunk)? {
                Decoded::Data(data, next) => {
                    *state = State::Chunked(next);
                    return Ok(Step::Data(data));
                }
                Decoded::Next(next) => *state = State::Chunked(next),
                Decoded::End(trailers) => {
                    *state = State::Done;
                    return Ok(trailers.map_or(Step::End, Step::Trailers));
                }
                Decoded::More => return Ok(Step::More),
            },
        }
    }
}

/// A whole response decoded by [`decode`].
#[derive(Debug, PartialEq)]
pub struct Whole {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub trailers: Option<HeaderMap>,
    /// The connection could carry another request after it.
    pub reusable: bool,
}

/// Decodes the response to a request (a `HEAD` when `is_head`) from `pieces`, the bytes as
/// they would arrive from the upstream, with the same head parser and framing engine as a
/// socket: for the fuzz target and tests. `Err(Error::Closed)` when the pieces end before the
/// response does.
pub fn decode(pieces: &[&[u8]], is_head: bool) -> Result<Whole, Error> {
    let mut rest = pieces.iter();
    let mut buf = BytesMut::new();
    let head = loop {
        if let Some(head) = parse_head(&mut buf, is_head)? {
            break head;
        }
        if buf.len() >= MAX_HEAD {
            return Err(Error::HeadTooLarge);
        }
        buf.extend_from_slice(rest.next().ok_or(Error::Closed)?);
    };
    let mut state = head.framing;
    let mut body = Vec::new();
    let mut trailers = None;
    loop {
        match step(&mut state, &mut buf)? {
            Step::Data(data) => body.extend_from_slice(&data),
            Step::Trailers(t) => {
                trailers = Some(t);
                break;
            }
            Step::End => break,
            Step::More => match rest.next() {
                Some(piece) => buf.extend_from_slice(piece),
                None if state == State::Close => break,
                None => return Err(Error::Closed),
            },
        }
    }
    let reusable =
        head.keep_alive && state != State::Close && buf.is_empty() && rest.all(|p| p.is_empty());
    Ok(Whole {
        status: head.status,
        headers: head.headers,
        body,
        trailers,
        reusable,
    })
}
impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.get_mut().poll_next(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// One step of chunked decoding.
#[derive(Debug)]
enum Decoded {
    /// Chunk data, then the state to go on from.
    Data(Bytes, Chunk),
    /// A framing line was consumed.
    Next(Chunk),
    /// The last chunk and its trailers (if any) were consumed.
    End(Option<HeaderMap>),
    /// More bytes are needed.
    More,
}

/// Decodes what `buf` holds of a chunked body from `state` (RFC 9112 §7.1), strictly: CRLF line
/// ends only, hexadecimal sizes that fit in 64 bits, bounded lines and trailers.
fn decode_chunk(buf: &mut BytesMut, state: Chunk) -> Result<Decoded, Error> {
    match state {
        Chunk::Size => {
            let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
                return if buf.len() > MAX_CHUNK_LINE {
                    Err(Error::Invalid("chunk size line too long"))
                } else {
                    Ok(Decoded::More)
                };
            };
            if lf > MAX_CHUNK_LINE || lf == 0 || buf[lf - 1] != b'\r' {
                return Err(Error::Invalid("malformed chunk size line"));
            }
            let line = &buf[..lf - 1];
            let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
            if digits == 0 || digits > 16 {
                return Err(Error::Invalid("malformed chunk size"));
            }
            // After the size: nothing, or (after optional blanks) extensions, which are ignored.
            let rest = line[digits..].trim_ascii_start();
            if !(rest.is_empty() || rest[0] == b';') || rest.iter().any(|&b| b < 0x20 && b != b'\t')
            {
                return Err(Error::Invalid("malformed chunk extension"));
            }
            let size = line[..digits].iter().fold(0u64, |n, &d| {
                (n << 4) | u64::from((d as char).to_digit(16).unwrap_or(0))
            });
            buf.advance(lf + 1);
            Ok(Decoded::Next(if size == 0 {
                Chunk::Trailers
            } else {
                Chunk::Data(size)
            }))
        }
        Chunk::Data(left) => {
            if buf.is_empty() {
                return Ok(Decoded::More);
            }
            let n = left.min(buf.len() as u64);
            let data = buf.split_to(n as usize).freeze();
            let next = if n == left {
                Chunk::DataEnd
            } else {
                Chunk::Data(left - n)
            };
            Ok(Decoded::Data(data, next))
        }
        Chunk::DataEnd => {
            if buf.len() < 2 {
                return Ok(Decoded::More);
            }
            if &buf[..2] != b"\r\n" {
                return Err(Error::Invalid("chunk data longer than its size"));
            }
            buf.advance(2);
            Ok(Decoded::Next(Chunk::Size))
        }
        Chunk::Trailers => {
            if buf.starts_with(b"\r\n") {
                buf.advance(2);
                return Ok(Decoded::End(None));
            }
            let mut fields = [httparse::EMPTY_HEADER; 32];
            match httparse::parse_headers(buf, &mut fields)? {
                httparse::Status::Complete((len, _)) if len > MAX_TRAILERS => {
                    Err(Error::Invalid("trailer section too large"))
                }
                httparse::Status::Complete((len, fields)) => {
                    let mut trailers = HeaderMap::with_capacity(fields.len());
                    for f in fields {
                        let name = HeaderName::from_bytes(f.name.as_bytes())
                            .map_err(|_| Error::Invalid("trailer name"))?;
                        let value = HeaderValue::from_bytes(f.value)
                            .map_err(|_| Error::Invalid("trailer value"))?;
                        trailers.append(name, value);
                    }
                    buf.advance(len);
                    Ok(Decoded::End(Some(trailers)))
                }
                httparse::Status::Partial if buf.len() > MAX_TRAILERS => {
                    Err(Error::Invalid("trailer section too large"))
                }
                httparse::Status::Partial => Ok(Decoded::More),
            }
        }
    }
}

#[cfg(test)]
mod tests;
