//! Copy-as-cURL: a POSIX `sh` command that re-sends a capture byte for byte.
//!
//! The replayed request carries exactly the captured headers (order, case, duplicates)
//! except `Host`, `Content-Length`, `Expect` and hop-by-hop ones: curl's own defaults
//! (`User-Agent`, `Accept`, a form `Content-Type`, `Expect: 100-continue`) are switched off
//! with empty `-H 'Name:'` arguments whenever the capture did not carry them.

use base64::Engine;
use http::{Method, Version};

use crate::capture::Capture;
use crate::deliver::join_target;

use super::is_unreplayable_header;

/// Bodies up to this size (valid, printable UTF-8) are inlined; larger ones go through base64.
pub const INLINE_BODY_LIMIT: usize = 64 * 1024;

/// The URL the command sends to: `base` + the capture's path suffix + its query, verbatim
/// (joined as replay and forward join them); `Err` names what is wrong with `base`.
pub fn target_url(base: &str, capture: &Capture) -> Result<String, String> {
    let mut url = join_target(base, capture.path_suffix(), capture.query())?.to_string();
    // A captured bare `?` is part of the request target too.
    if capture.query() == Some("") && !url.contains('?') {
        url.push('?');
    }
    Ok(url)
}

/// The shell command (with a trailing newline) that sends `capture` to `base` (see [`target_url`]).
pub fn command(capture: &Capture, base: &str) -> Result<String, String> {
    let url = target_url(base, capture)?;
    let body = capture.body();
    let method = capture.method();
    // An explicit `Content-Length: 0` is reproduced too (curl only sends one with data).
    let send_body =
        !body.is_empty() || (capture.meta().declared_length.is_some() && method != Method::HEAD);
    let inline = inline_body(&body);
    let mut out = String::new();
    if capture.truncated() {
        out.push_str(&format!(
            "# the body was cut at --max-body: this sends the {} stored bytes\n",
            body.len()
        ));
    }
    if !body.is_empty() && inline.is_none() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&body);
        out.push_str(&format!("printf '%s' '{b64}' | base64 -d | "));
    }
    out.push_str("curl");
    match capture.meta().version {
        Version::HTTP_10 => out.push_str(" --http1.0"),
        // Without it curl may negotiate HTTP/2 over TLS and lowercase every header name.
        Version::HTTP_11 => out.push_str(" --http1.1"),
        // HTTP/2 captures have lowercase names already; `--http2` on cleartext would add
        // `Upgrade`/`HTTP2-Settings` headers, so let curl choose (h2 over TLS via ALPN).
        _ => {}
    }
    out.push_str(" -g --path-as-is");
    match (method, send_body) {
        (&Method::GET, false) | (&Method::POST, true) => {}
        (&Method::HEAD, false) => out.push_str(" --head"),
        _ => {
            out.push_str(" -X ");
            out.push_str(&quote(method.as_str().as_bytes()));
        }
    }
    let mut lines = vec![quote(url.as_bytes())];
    let has = |name: &str| capture.header(name).is_some();
    for (name, value) in capture.headers() {
        if is_unreplayable_header(name) {
            continue;
        }
        let mut arg = name.to_vec();
        if value.is_empty() {
            // `-H 'Name:'` would remove the header; `Name;` sends it with an empty value.
            arg.push(b';');
        } else {
            arg.extend_from_slice(b": ");
            arg.extend_from_slice(value);
        }
        lines.push(format!("-H {}", quote(&arg)));
    }
    let mut suppress = |name: &str| lines.push(format!("-H '{name}:'"));
    if !has("User-Agent") {
        suppress("User-Agent");
    }
    if !has("Accept") {
        suppress("Accept");
    }
    if send_body {
        if !has("Content-Type") {
            suppress("Content-Type");
        }
        suppress("Expect");
        lines.push(match (body.is_empty(), inline) {
            (true, _) => "--data-binary ''".to_string(),
            (false, Some(text)) => format!("--data-binary {}", quote(text.as_bytes())),
            (false, None) => "--data-binary @-".to_string(),
        });
    }
    for line in lines {
        out.push_str(" \\\n  ");
        out.push_str(&line);
    }
    out.push('\n');
    Ok(out)
}

/// The body as an inline argument, if that is safe and readable: printable UTF-8 with no NUL,
/// at most [`INLINE_BODY_LIMIT`], and not starting with `@` (curl would read a file by that name).
fn inline_body(body: &[u8]) -> Option<&str> {
    if body.is_empty() || body.len() > INLINE_BODY_LIMIT || body[0] == b'@' {
        return None;
    }
    let text = std::str::from_utf8(body).ok()?;
    let bytes = text.as_bytes();
    let ok = text
        .char_indices()
        .all(|(i, c)| c == '\n' || (c == '\r' && bytes.get(i + 1) == Some(&b'\n')) || printable(c));
    ok.then_some(text)
}

/// Characters shown as themselves: no control characters (terminal escapes) and no
/// invisible or bidirectional formatting characters that could disguise the command.
fn printable(c: char) -> bool {
    c == '\t'
        || !(c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}'))
}

/// One POSIX `sh` word for arbitrary bytes: printable text in single quotes (`'` as `'\''`),
/// everything else (non-UTF-8 bytes, control characters) as `"$(printf '\ooo')"`, so the
/// command stays plain text and reproduces the exact bytes. A newline stays literal
/// (fine inside quotes) because `$(…)` would strip it.
pub fn quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    let mut open = false;
    let mut raw: Vec<u8> = Vec::new();
    let flush_raw = |out: &mut String, raw: &mut Vec<u8>| {
        if !raw.is_empty() {
            out.push_str("\"$(printf '");
            for b in raw.iter() {
                out.push_str(&format!("\\{b:03o}"));
            }
            out.push_str("')\"");
            raw.clear();
        }
    };
    for chunk in bytes.utf8_chunks() {
        let text = chunk.valid();
        for (i, c) in text.char_indices() {
            let crlf = c == '\r' && text.as_bytes().get(i + 1) == Some(&b'\n');
            if c == '\n' || crlf || printable(c) {
                flush_raw(&mut out, &mut raw);
                if !open {
                    out.push('\'');
                    open = true;
                }
                if c == '\'' {
                    out.push_str("'\\''");
                } else {
                    out.push(c);
                }
            } else {
                if open {
                    out.push('\'');
                    open = false;
                }
                let mut buf = [0u8; 4];
                raw.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
        if !chunk.invalid().is_empty() {
            if open {
                out.push('\'');
                open = false;
            }
            raw.extend_from_slice(chunk.invalid());
        }
    }
    flush_raw(&mut out, &mut raw);
    if open {
        out.push('\'');
    }
    if out.is_empty() {
        out.push_str("''");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::testutil::capture;

    /// What `sh` makes of a quoted word: the exact bytes `printf %s` receives.
    fn sh_value(word: &str) -> Vec<u8> {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {word}"))
            .output()
            .expect("sh runs");
        assert!(out.status.success(), "{word}: {:?}", out);
        out.stdout
    }

    #[test]
    fn quote_round_trips_nasty_strings_through_sh() {
        let cases: &[&[u8]] = &[
            b"",
            b"plain",
            b"it's",
            b"''",
            b"$(touch /tmp/hookrelay-pwned) `id` $HOME ${PATH}",
            b"a\nb\r\nc",
            b"line\\ back\\slash \" double \"",
            b"tab\there; rm -rf / & | > < * ? [a] ~ !",
            b"\xff\xfe non-utf8 \x80",
            b"esc \x1b[31m red \x07 bel \x7f del \r lone-cr",
            "bidi \u{202e} override, caf\u{e9}, \u{1F600}".as_bytes(),
            b"-H not-a-flag",
        ];
        for case in cases {
            let word = quote(case);
            assert_eq!(sh_value(&word), *case, "word {word}");
            assert!(
                !word.contains('\u{1b}') && !word.contains('\u{202e}'),
                "{word}"
            );
        }
    }

    #[test]
    fn quote_shapes() {
        assert_eq!(quote(b"it's"), r"'it'\''s'");
        assert_eq!(quote(b"a\xffb"), r#"'a'"$(printf '\377')"'b'"#);
        assert_eq!(quote(b""), "''");
    }

    #[test]
    fn command_copies_headers_in_order_and_suppresses_curl_defaults() {
        let c = capture(
            "POST",
            "/stripe/events",
            Some("a=1&b=[2]"),
            &[
                (b"Host", b"example.test"),
                (b"content-Type", b"application/json"),
                (b"X-Dup", b"one"),
                (b"Connection", b"keep-alive"),
                (b"Content-Length", b"7"),
                (b"x-dup", b"two"),
                (b"X-Empty", b""),
                (b"Expect", b"100-continue"),
                (b"Proxy-Authorization", b"secret"),
            ],
            b"{\"a\":1}",
            3,
        );
        let cmd = command(&c, "http://127.0.0.1:9/bin1").unwrap();
        let expected = "curl --http1.1 -g --path-as-is \\\n  \
            'http://127.0.0.1:9/bin1/stripe/events?a=1&b=[2]' \\\n  \
            -H 'content-Type: application/json' \\\n  \
            -H 'X-Dup: one' \\\n  \
            -H 'x-dup: two' \\\n  \
            -H 'X-Empty;' \\\n  \
            -H 'User-Agent:' \\\n  \
            -H 'Accept:' \\\n  \
            -H 'Expect:' \\\n  \
            --data-binary '{\"a\":1}'\n";
        assert_eq!(cmd, expected);
    }

    #[test]
    fn command_method_flags() {
        let get = capture("GET", "", None, &[(b"User-Agent", b"x")], b"", 1);
        let cmd = command(&get, "http://h/bin1").unwrap();
        assert!(!cmd.contains(" -X ") && !cmd.contains("--data"), "{cmd}");
        assert!(
            !cmd.contains("User-Agent:'"),
            "captured UA is sent, not suppressed"
        );
        let head = capture("HEAD", "", None, &[], b"", 1);
        let head_cmd = command(&head, "http://h/bin1").unwrap();
        assert!(head_cmd.contains(" --head"), "{head_cmd}");
        let put = capture("PUT", "/x", None, &[], b"data", 1);
        let cmd = command(&put, "http://h/bin1").unwrap();
        assert!(cmd.contains(" -X 'PUT'"), "{cmd}");
        assert!(cmd.contains("-H 'Content-Type:'"), "{cmd}");
        // Content-Length: 0 POST sends an empty body explicitly.
        let empty = capture("POST", "", None, &[(b"Content-Length", b"0")], b"", 1);
        let cmd = command(&empty, "http://h/bin1").unwrap();
        assert!(
            cmd.contains("--data-binary ''") && !cmd.contains(" -X "),
            "{cmd}"
        );
    }

    #[test]
    fn binary_at_and_large_bodies_use_the_base64_pipeline() {
        let png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\x00";
        let at = b"@/etc/passwd";
        let big = vec![b'a'; INLINE_BODY_LIMIT + 1];
        let ctrl = b"text with \x1b[2J escape";
        for body in [&png[..], &at[..], &big[..], &ctrl[..]] {
            let c = capture("POST", "", None, &[], body, 1);
            let cmd = command(&c, "http://h/bin1").unwrap();
            let b64 = base64::engine::general_purpose::STANDARD.encode(body);
            assert!(
                cmd.starts_with(&format!("printf '%s' '{b64}' | base64 -d | curl ")),
                "{cmd}"
            );
            assert!(cmd.ends_with("--data-binary @-\n"), "{cmd}");
        }
        let fits = vec![b'a'; INLINE_BODY_LIMIT];
        let c = capture("POST", "", None, &[], &fits, 1);
        assert!(command(&c, "http://h/bin1").unwrap().starts_with("curl "));
    }

    #[test]
    fn non_utf8_header_values_are_reproduced() {
        let c = capture("GET", "", None, &[(b"X-Bin", b"a\xffb'c")], b"", 1);
        let cmd = command(&c, "http://h/bin1").unwrap();
        let line = cmd.lines().find(|l| l.contains("X-Bin")).unwrap();
        let word = line
            .trim()
            .trim_start_matches("-H ")
            .trim_end_matches(" \\");
        assert_eq!(sh_value(word), b"X-Bin: a\xffb'c");
        assert!(cmd.is_ascii());
    }

    #[test]
    fn target_url_joins_path_suffix_and_queries() {
        let c = capture("POST", "/a/../b", Some("x=1"), &[], b"", 1);
        let url = |base: &str, c: &Capture| target_url(base, c).unwrap();
        assert_eq!(url("http://h:1/bin1", &c), "http://h:1/bin1/a/../b?x=1");
        assert_eq!(url("http://h:1/hook/", &c), "http://h:1/hook/a/../b?x=1");
        assert_eq!(
            url("http://h:1/hook?k=v", &c),
            "http://h:1/hook/a/../b?k=v&x=1"
        );
        let root = capture("POST", "", None, &[], b"", 1);
        assert_eq!(url("http://h:1/", &root), "http://h:1/");
        let bare = capture("POST", "", Some(""), &[], b"", 1);
        assert_eq!(url("http://h:1/bin1", &bare), "http://h:1/bin1?");
        for bad in ["ftp://x/", "/relative", "http://a b/", "x", "file:///etc"] {
            assert!(target_url(bad, &root).is_err(), "{bad}");
        }
    }
}
