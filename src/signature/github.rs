//! GitHub: `X-Hub-Signature-256: sha256=<hex>`, the HMAC of the raw body (as octokit signs).

use super::{sign_body_mac, verify_body_mac, Encoding, Outcome, Request, SignInput};

/// The header GitHub sends the SHA-256 signature in.
const HEADER: &str = "X-Hub-Signature-256";

/// GitHub always writes the `sha256=` prefix and lower-case hex.
const ENCODING: Encoding = Encoding {
    prefix: "sha256=",
    prefix_optional: false,
    base64: false,
    hint: "'sha256=<64 hex digits>'",
};

/// Checks `X-Hub-Signature-256`.
pub(super) fn verify(req: &Request) -> Outcome {
    verify_body_mac(req, HEADER, ENCODING)
}

/// Produces `X-Hub-Signature-256`.
pub(super) fn sign(input: &SignInput) -> Vec<(String, String)> {
    sign_body_mac(input, HEADER, ENCODING)
}
