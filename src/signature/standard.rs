//! Standard Webhooks (and Svix, with `svix-*` header names): `webhook-signature:
//! v1,<b64> [v1,<b64>…]`, the base64 HMAC of `"{id}.{timestamp}.{body}"` keyed with the
//! base64-decoded secret after `whsec_`.

use super::{
    b64_decode, decode_signatures, hmac_sha256, mac_matches, parse_timestamp, timestamped_outcome,
    Encoding, Outcome, Request, SignError, SignInput,
};
use crate::signature::Scheme;

/// Header name prefixes: the standard's own, then Svix's.
const FAMILIES: [&str; 2] = ["webhook", "svix"];

/// `v1,` then padded base64; other versions (e.g. `v1a` asymmetric) are skipped.
const ENCODING: Encoding = Encoding {
    prefix: "v1,",
    prefix_optional: false,
    base64: true,
    hint: "'v1,<base64>' (space-separated)",
};

/// Why a secret is unusable, shown to the user as-is.
const BAD_SECRET: &str = "a standard secret must be whsec_ followed by base64";

/// The HMAC key: the secret without `whsec_`, base64-decoded (as the official libraries do).
fn key(secret: &str) -> Option<Vec<u8>> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    b64_decode(encoded.as_bytes()).filter(|k| !k.is_empty())
}

/// The MAC over the standard's signed content.
fn mac(key: &[u8], id: &[u8], ts: &[u8], body: &[u8]) -> [u8; 32] {
    hmac_sha256(key, &[id, b".", ts, b".", body])
}

/// Checks `webhook-*` headers, or `svix-*` ones when no `webhook-signature` is present.
pub(super) fn verify(req: &Request) -> Outcome {
    let key = key(req.secret).ok_or_else(|| format!("secret misconfigured: {BAD_SECRET}"))?;
    let family = FAMILIES
        .into_iter()
        .find(|f| req.header(&format!("{f}-signature")).is_some())
        .ok_or("missing webhook-signature (or svix-signature) header")?;
    let [id_h, ts_h, sig_h] = ["id", "timestamp", "signature"].map(|s| format!("{family}-{s}"));
    let id = req.require(&id_h)?;
    let ts_raw = req.require(&ts_h)?;
    let ts = parse_timestamp(ts_raw, &ts_h)?;
    let sigs = req.require(&sig_h)?;
    let candidates = decode_signatures(
        sigs.split(u8::is_ascii_whitespace)
            .filter(|s| !s.is_empty()),
        ENCODING,
    );
    let expected = mac(&key, id, ts_raw, req.body);
    let matched = mac_matches(&expected, &candidates, &sig_h, ENCODING)?;
    timestamped_outcome(matched, &sig_h, ts, &ts_h, req)
}

/// Produces `webhook-id`, `webhook-timestamp`, `webhook-signature`, in that order.
pub(super) fn sign(input: &SignInput, msg_id: &str) -> Result<Vec<(String, String)>, SignError> {
    let key = key(input.secret).ok_or(SignError::InvalidSecret {
        scheme: Scheme::Standard,
        reason: BAD_SECRET,
    })?;
    if msg_id.is_empty() || http::HeaderValue::from_str(msg_id).is_err() {
        return Err(SignError::InvalidHeaderValue("message id"));
    }
    let ts = input.now.to_string();
    let sig = ENCODING.encode(&mac(&key, msg_id.as_bytes(), ts.as_bytes(), input.body));
    Ok(vec![
        ("webhook-id".to_owned(), msg_id.to_owned()),
        ("webhook-timestamp".to_owned(), ts),
        ("webhook-signature".to_owned(), sig),
    ])
}
