//! Slack: `X-Slack-Signature: v0=<hex>`, the hex HMAC of `"v0:{ts}:{body}"` with the
//! timestamp from `X-Slack-Request-Timestamp`.

use super::{
    decode_signatures, hmac_sha256, mac_matches, parse_timestamp, split_list, timestamped_outcome,
    Encoding, Outcome, Request, SignInput,
};

/// The signature header.
const SIG: &str = "X-Slack-Signature";
/// The timestamp header, part of the signed content.
const TS: &str = "X-Slack-Request-Timestamp";

/// `v0=` then lower-case hex.
const ENCODING: Encoding = Encoding {
    prefix: "v0=",
    prefix_optional: false,
    base64: false,
    hint: "'v0=<64 hex digits>'",
};

/// The MAC over Slack's base string.
fn mac(secret: &str, ts: &[u8], body: &[u8]) -> [u8; 32] {
    hmac_sha256(secret.as_bytes(), &[b"v0:", ts, b":", body])
}

/// Checks `X-Slack-Signature` and the freshness of `X-Slack-Request-Timestamp`.
pub(super) fn verify(req: &Request) -> Outcome {
    let ts_raw = req.require(TS)?;
    let ts = parse_timestamp(ts_raw, TS)?;
    let candidates = decode_signatures(split_list(req.require(SIG)?), ENCODING);
    let expected = mac(req.secret, ts_raw, req.body);
    let matched = mac_matches(&expected, &candidates, SIG, ENCODING)?;
    timestamped_outcome(matched, SIG, ts, TS, req)
}

/// Produces the two headers, timestamp first, as slack-sdk's `SignatureVerifier` expects.
pub(super) fn sign(input: &SignInput) -> Vec<(String, String)> {
    let ts = input.now.to_string();
    let sig = ENCODING.encode(&mac(input.secret, ts.as_bytes(), input.body));
    vec![(TS.to_owned(), ts), (SIG.to_owned(), sig)]
}
