use super::*;

/// Decodes a whole chunked body fed `step` bytes at a time: the data and the trailers.
fn dechunk(wire: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>), Error> {
    let mut buf = BytesMut::new();
    let mut state = Chunk::Size;
    let mut data = Vec::new();
    let mut fed = 0;
    loop {
        match decode_chunk(&mut buf, state)? {
            Decoded::Data(d, next) => {
                data.extend_from_slice(&d);
                state = next;
            }
            Decoded::Next(next) => state = next,
            Decoded::End(trailers) => {
                assert!(buf.is_empty(), "nothing may follow the body");
                return Ok((data, trailers));
            }
            Decoded::More => {
                if fed == wire.len() {
                    return Err(Error::Closed);
                }
                let n = step.min(wire.len() - fed);
                buf.extend_from_slice(&wire[fed..fed + n]);
                fed += n;
            }
        }
    }
}

#[test]
fn chunked_bodies_decode_however_the_bytes_arrive() {
    let wire = b"5\r\nhello\r\nA;name=value;x\r\n, world!!!\r\n001\r\n.\r\n0\r\n\r\n";
    for step in [1, 2, 3, 7, 64] {
        let (data, trailers) = dechunk(wire, step).unwrap();
        assert_eq!(data, b"hello, world!!!.", "step {step}");
        assert!(trailers.is_none());
    }
}

#[test]
fn chunked_trailers_are_passed_on() {
    let wire = b"3\r\nabc\r\n0\r\nGrpc-Status: 0\r\nX-Checksum: 12\r\n\r\n";
    for step in [1, 5, 100] {
        let (data, trailers) = dechunk(wire, step).unwrap();
        assert_eq!(data, b"abc");
        let t = trailers.expect("trailers");
        assert_eq!(t["grpc-status"], "0");
        assert_eq!(t["x-checksum"], "12");
    }
}

#[test]
fn malformed_chunked_framing_is_an_error() {
    for wire in [
        &b"5\nhello\r\n0\r\n\r\n"[..],          // bare LF after the size
        b"5\r\nhello\n0\r\n\r\n",               // bare LF after the data
        b"5\r\nhelloX\r\n0\r\n\r\n",            // data longer than its size
        b"g\r\nhello\r\n0\r\n\r\n",             // not hexadecimal
        b"\r\nhello\r\n0\r\n\r\n",              // no size
        b"-5\r\nhello\r\n0\r\n\r\n",            // signed
        b"0x5\r\nhello\r\n0\r\n\r\n",           // prefixed
        b"5 x\r\nhello\r\n0\r\n\r\n",           // junk after the size
        b"5;a\x01b\r\nhello\r\n0\r\n\r\n",      // control byte in an extension
        b"10000000000000000\r\nx\r\n0\r\n\r\n", // 17 digits: past 64 bits
    ] {
        assert!(
            matches!(dechunk(wire, 64), Err(Error::Invalid(_))),
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
}

#[test]
fn chunk_lines_and_trailers_are_bounded() {
    let mut long = b"5;".to_vec();
    long.extend(std::iter::repeat_n(b'a', MAX_CHUNK_LINE + 10));
    assert!(matches!(dechunk(&long, 1024), Err(Error::Invalid(_))));

    let mut trailers = b"0\r\n".to_vec();
    for i in 0..2000 {
        trailers.extend_from_slice(format!("X-T{i}: vvvvvvvvvv\r\n").as_bytes());
    }
    assert!(dechunk(&trailers, 4096).is_err());
}

#[test]
fn the_largest_chunk_size_does_not_overflow() {
    let mut buf = BytesMut::from(&b"ffffffffffffffff\r\n"[..]);
    assert!(matches!(
        decode_chunk(&mut buf, Chunk::Size),
        Ok(Decoded::Next(Chunk::Data(u64::MAX)))
    ));
}

fn head(wire: &str, is_head: bool) -> Result<Option<Head>, Error> {
    let mut buf = BytesMut::from(wire.as_bytes());
    parse_head(&mut buf, is_head)
}

fn framed(wire: &str) -> (State, bool) {
    let h = head(wire, false).unwrap().expect("complete head");
    (h.framing, h.keep_alive)
}

#[test]
fn body_framing_follows_rfc_9112() {
    assert_eq!(
        framed("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n"),
        (State::Length(12), true)
    );
    // Identical values, in one field or several, are one length.
    assert_eq!(
        framed("HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\nContent-Length: 7\r\n\r\n"),
        (State::Length(7), true)
    );
    assert_eq!(
        framed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        (State::Chunked(Chunk::Size), true)
    );
    // Both: chunked wins, Content-Length is dropped, the connection is not reused.
    let h = head(
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        false,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        (h.framing, h.keep_alive),
        (State::Chunked(Chunk::Size), false)
    );
    assert!(!h.headers.contains_key(CONTENT_LENGTH));
    // Not chunked last: read to the close.
    assert_eq!(
        framed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
        (State::Close, false)
    );
    assert_eq!(
        framed("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"),
        (State::Chunked(Chunk::Size), true)
    );
    // No framing at all: to the close.
    assert_eq!(framed("HTTP/1.1 200 OK\r\n\r\n"), (State::Close, false));
    // No body whatever the fields say.
    for wire in [
        "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
        "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        assert_eq!(framed(wire), (State::Length(0), true), "{wire}");
    }
    let h = head("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", true)
        .unwrap()
        .unwrap();
    assert_eq!(h.framing, State::Length(0));
    assert_eq!(h.headers[CONTENT_LENGTH], "99");
}

#[test]
fn keep_alive_follows_the_version_and_connection() {
    let ka = |wire: &str| framed(wire).1;
    assert!(ka("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
    assert!(!ka(
        "HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n"
    ));
    assert!(!ka(
        "HTTP/1.1 200 OK\r\nConnection: x-a, close\r\nContent-Length: 0\r\n\r\n"
    ));
    assert!(!ka("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
    assert!(ka(
        "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
    ));
}

#[test]
fn malformed_lengths_and_heads_are_errors() {
    for wire in [
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
        "HTTP/1.1 200 OK\r\nBad Name: a\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/2 200 OK\r\n\r\n",
    ] {
        assert!(head(wire, false).is_err(), "{wire}");
    }
    let mut many = String::from("HTTP/1.1 200 OK\r\n");
    for i in 0..=MAX_HEADERS {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert!(matches!(
        head(&many, false),
        Err(Error::Parse(httparse::Error::TooManyHeaders))
    ));
}

#[test]
fn interim_responses_are_skipped_and_a_partial_head_waits() {
    let mut buf = BytesMut::from(
        &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-A: 1\r\n\r\nok"[..],
    );
    let h = parse_head(&mut buf, false).unwrap().unwrap();
    assert_eq!(h.status, StatusCode::CREATED);
    assert_eq!(h.headers["x-a"], "1");
    assert!(!h.headers.contains_key("link"));
    assert_eq!(&buf[..], b"ok", "the body stays in the buffer");

    assert!(head("HTTP/1.1 200 OK\r\nContent-Len", false)
        .unwrap()
        .is_none());
}

#[test]
fn requests_are_framed_by_their_known_length() {
    let encode = |method: Method, body: Option<&'static str>, headers: &[(&str, &str)]| {
        let mut req = Request::new(match body {
            Some(b) => UpstreamBody::Buffered(Some(Bytes::from_static(b.as_bytes()))),
            None => UpstreamBody::Empty,
        });
        *req.method_mut() = method;
        *req.uri_mut() = "/p/a?q=1".parse().unwrap();
        for (k, v) in headers {
            req.headers_mut().append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let mut out = Vec::new();
        encode_head(&req, body.map_or(0, str::len), &mut out);
        String::from_utf8(out).unwrap()
    };
    assert_eq!(
        encode(Method::GET, None, &[("host", "up"), ("x-a", "1")]),
        "GET /p/a?q=1 HTTP/1.1\r\nhost: up\r\nx-a: 1\r\n\r\n"
    );
    // An empty POST says so; a body is announced by its real length, whatever was claimed, and
    // never as chunked.
    assert_eq!(
        encode(Method::POST, None, &[("host", "up")]),
        "POST /p/a?q=1 HTTP/1.1\r\nhost: up\r\ncontent-length: 0\r\n\r\n"
    );
    assert_eq!(
        encode(
            Method::POST,
            Some("hello"),
            &[
                ("content-length", "5"),
                ("transfer-encoding", "chunked"),
                ("host", "up")
            ]
        ),
        "POST /p/a?q=1 HTTP/1.1\r\nhost: up\r\ncontent-length: 5\r\n\r\n"
    );
    assert_eq!(
        encode(Method::GET, None, &[("content-length", "0")]),
        "GET /p/a?q=1 HTTP/1.1\r\ncontent-length: 0\r\n\r\n"
    );
}

#[test]
fn a_response_decodes_the_same_however_its_bytes_arrive() {
    let wire: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n4\r\nwiki\r\n5;x=y\r\npedia\r\n0\r\nX-T: 2\r\n\r\n";
    let whole = decode(&[wire], false).unwrap();
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(whole.body, b"wikipedia");
    assert_eq!(whole.trailers.as_ref().unwrap()["x-t"], "2");
    assert!(whole.reusable);
    for at in 0..wire.len() {
        let (a, b) = wire.split_at(at);
        assert_eq!(decode(&[a, b], false).unwrap(), whole, "split at {at}");
    }
    let bytewise: Vec<&[u8]> = wire.chunks(1).collect();
    assert_eq!(decode(&bytewise, false).unwrap(), whole);
}

#[test]
fn reuse_needs_a_keep_alive_answer_that_ended_where_its_framing_said() {
    let reusable = |wire: &str| decode(&[wire.as_bytes()], false).unwrap().reusable;
    assert!(reusable("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
    assert!(!reusable("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok!"));
    assert!(!reusable("HTTP/1.1 200 OK\r\n\r\nto the close"));
    assert!(!reusable(
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    ));
    // Cut short: an error, never a shorter body.
    assert!(matches!(
        decode(&[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok"], false),
        Err(Error::Closed)
    ));
    assert!(matches!(
        decode(
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n"],
            false
        ),
        Err(Error::Closed)
    ));
}
