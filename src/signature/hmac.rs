//! Generic `hmac-sha256`: hex HMAC-SHA256 of the raw body in `X-Signature` or a
//! configured header, as many smaller API platforms send it.

use super::{sign_body_mac, verify_body_mac, Encoding, Outcome, Request, SignInput};

/// Header used when none is configured.
const DEFAULT_HEADER: &str = "X-Signature";

/// Senders differ on `sha256=` and on hex case, so both are accepted.
const ENCODING: Encoding = Encoding {
    prefix: "sha256=",
    prefix_optional: true,
    base64: false,
    hint: "a hex HMAC-SHA256 (64 hex digits, optionally after 'sha256=')",
};

/// Encoding used when signing: bare lower-case hex, the most common form.
const SIGN_ENCODING: Encoding = Encoding {
    prefix: "",
    ..ENCODING
};

/// Checks the configured header (default `X-Signature`).
pub(super) fn verify(req: &Request, header: Option<&str>) -> Outcome {
    verify_body_mac(req, header.unwrap_or(DEFAULT_HEADER), ENCODING)
}

/// Produces the configured header (default `X-Signature`) with bare hex.
pub(super) fn sign(input: &SignInput, header: Option<&str>) -> Vec<(String, String)> {
    sign_body_mac(input, header.unwrap_or(DEFAULT_HEADER), SIGN_ENCODING)
}
