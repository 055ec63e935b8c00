//! Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`, the hex HMAC of
//! `"{t}.{body}"` keyed with the whole `whsec_…` string (not decoded).

use super::{
    decode_signatures, hmac_sha256, mac_matches, parse_timestamp, timestamped_outcome, Encoding,
    Outcome, Request, SignInput,
};

/// The one header Stripe signs with.
const HEADER: &str = "Stripe-Signature";

/// Each `v1=` value is bare hex; the `v1=` key is parsed separately.
const ENCODING: Encoding = Encoding {
    prefix: "",
    prefix_optional: false,
    base64: false,
    hint: "'t=<unix>,v1=<hex>' (no well-formed v1 signature)",
};

/// Checks `Stripe-Signature`: any `v1` may match (Stripe sends several while a secret is
/// being rolled); `v0` and unknown keys are ignored, as Stripe's libraries do.
pub(super) fn verify(req: &Request) -> Outcome {
    let raw = req.require_str(HEADER)?;
    let mut ts = None;
    let mut v1 = Vec::new();
    for (key, value) in raw.split(',').filter_map(|item| item.split_once('=')) {
        match key.trim() {
            "t" => {
                ts.get_or_insert(value.trim());
            }
            "v1" => v1.push(value.trim().as_bytes()),
            _ => {}
        }
    }
    let ts_raw = ts.ok_or_else(|| format!("{HEADER} has no t= timestamp"))?;
    let ts = parse_timestamp(ts_raw.as_bytes(), &format!("{HEADER} t="))?;
    if v1.is_empty() {
        return Err(format!("{HEADER} has no v1= signature"));
    }
    // The timestamp is signed exactly as sent.
    let expected = hmac_sha256(req.secret.as_bytes(), &[ts_raw.as_bytes(), b".", req.body]);
    let candidates = decode_signatures(v1, ENCODING);
    let matched = mac_matches(&expected, &candidates, HEADER, ENCODING)?;
    timestamped_outcome(matched, HEADER, ts, "its t= timestamp", req)
}

/// Produces `Stripe-Signature: t=<now>,v1=<hex>` as Stripe's `generate_test_header_string` does.
pub(super) fn sign(input: &SignInput) -> Vec<(String, String)> {
    let t = input.now.to_string();
    let mac = hmac_sha256(input.secret.as_bytes(), &[t.as_bytes(), b".", input.body]);
    vec![(
        HEADER.to_owned(),
        format!("t={t},v1={}", ENCODING.encode(&mac)),
    )]
}
