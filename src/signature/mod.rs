//! Webhook signatures: verify what a sender signed (ingest) and sign like a sender (`send`).
//!
//! One file per scheme; this module holds the shared pieces (types, dispatch, HMAC,
//! constant-time comparison, header lookup, timestamp window). Every scheme module has
//! the same two functions, `verify(&Request, …) -> Outcome` and `sign(&SignInput, …)`,
//! plus the scheme's own inputs (configured header, message id).
//! Details never contain the expected signature or the secret.

use ::hmac::{Hmac, Mac};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

mod github;
mod header_secret;
mod hmac;
mod shopify;
mod slack;
mod standard;
mod stripe;

#[cfg(test)]
mod tests;

/// A webhook signature scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    /// `Stripe-Signature: t=…,v1=…` (hex HMAC of `"{t}.{body}"`, key = the whole `whsec_…` string).
    Stripe,
    /// `X-Hub-Signature-256: sha256=<hex>` (hex HMAC of the body).
    Github,
    /// Standard Webhooks / Svix: `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<b64>`.
    Standard,
    /// `X-Slack-Signature: v0=<hex>` of `"v0:{ts}:{body}"`, plus `X-Slack-Request-Timestamp`.
    Slack,
    /// `X-Shopify-Hmac-Sha256`: base64 HMAC of the body.
    Shopify,
    /// Generic hex HMAC-SHA256 of the body in `X-Signature` or a configured header.
    HmacSha256,
    /// The shared secret itself, sent in a configured header (default `x-rapidapi-webhook-secret`).
    HeaderSecret,
}

impl Scheme {
    /// Every scheme, in the order they are listed in help texts.
    pub const ALL: [Scheme; 7] = [
        Scheme::Stripe,
        Scheme::Github,
        Scheme::Standard,
        Scheme::Slack,
        Scheme::Shopify,
        Scheme::HmacSha256,
        Scheme::HeaderSecret,
    ];

    /// Parses a scheme name as written in settings and on the command line (case-insensitive).
    pub fn parse(s: &str) -> Option<Scheme> {
        let s = s.trim();
        Scheme::ALL
            .into_iter()
            .find(|scheme| scheme.as_str().eq_ignore_ascii_case(s))
    }

    /// The scheme's name in settings, JSON and on the command line.
    pub fn as_str(&self) -> &'static str {
        match self {
            Scheme::Stripe => "stripe",
            Scheme::Github => "github",
            Scheme::Standard => "standard",
            Scheme::Slack => "slack",
            Scheme::Shopify => "shopify",
            Scheme::HmacSha256 => "hmac-sha256",
            Scheme::HeaderSecret => "header-secret",
        }
    }
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a bin verifies with.
pub struct VerifyConfig<'a> {
    /// The scheme the sender uses.
    pub scheme: Scheme,
    /// The shared secret as the sender's dashboard shows it (e.g. `whsec_…`).
    pub secret: &'a str,
    /// Header carrying the signature; only used by `hmac-sha256` and `header-secret`.
    pub header: Option<&'a str>,
    /// Accepted clock difference for timestamped schemes (stripe, standard, slack), both ways.
    pub tolerance_s: u64,
}

/// The result of checking one request's signature.
#[derive(Clone, Debug, serde::Serialize, PartialEq, Eq)]
pub struct Verdict {
    /// The scheme that was checked.
    pub scheme: Scheme,
    /// Whether the request carries a valid, fresh signature.
    pub valid: bool,
    /// Human-readable reason: which header matched, or what was wrong.
    pub detail: String,
}

/// Why `sign` could not produce headers.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// No secret was given.
    #[error("the signing secret is empty")]
    EmptySecret,
    /// The secret does not have the form the scheme requires.
    #[error("invalid {scheme} secret: {reason}")]
    InvalidSecret {
        /// The scheme whose secret format was violated.
        scheme: Scheme,
        /// What is wrong with it (never the secret itself).
        reason: &'static str,
    },
    /// The configured header name is not a valid HTTP header name.
    #[error("invalid signature header name {0:?}")]
    InvalidHeaderName(String),
    /// A value (the `header-secret` secret or the standard message id) cannot be sent in a header.
    #[error("the {0} is empty or not a valid HTTP header value")]
    InvalidHeaderValue(&'static str),
}

/// Checks the signature of one request. `headers` are in arrival order, names matched
/// case-insensitively; `now_unix` is the current time in unix seconds.
pub fn verify(
    cfg: &VerifyConfig,
    headers: &[(&[u8], &[u8])],
    body: &[u8],
    now_unix: i64,
) -> Verdict {
    let req = Request {
        headers,
        body,
        secret: cfg.secret,
        now: now_unix,
        tolerance_s: cfg.tolerance_s,
    };
    let outcome = if cfg.secret.is_empty() {
        Err("secret misconfigured: the secret is empty".to_owned())
    } else {
        match cfg.scheme {
            Scheme::Stripe => stripe::verify(&req),
            Scheme::Github => github::verify(&req),
            Scheme::Standard => standard::verify(&req),
            Scheme::Slack => slack::verify(&req),
            Scheme::Shopify => shopify::verify(&req),
            Scheme::HmacSha256 => hmac::verify(&req, cfg.header),
            Scheme::HeaderSecret => header_secret::verify(&req, cfg.header),
        }
    };
    let (valid, detail) = match outcome {
        Ok(detail) => (true, detail),
        Err(detail) => (false, detail),
    };
    Verdict {
        scheme: cfg.scheme,
        valid,
        detail,
    }
}

/// Headers that the scheme's official libraries would send, in that order. `msg_id` is
/// used by `standard` (e.g. `msg_<random>`); `header` overrides the header name for
/// `hmac-sha256` and `header-secret`.
pub fn sign(
    scheme: Scheme,
    secret: &str,
    header: Option<&str>,
    body: &[u8],
    now_unix: i64,
    msg_id: &str,
) -> Result<Vec<(String, String)>, SignError> {
    if secret.is_empty() {
        return Err(SignError::EmptySecret);
    }
    if let Some(name) = header {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(SignError::InvalidHeaderName(name.to_owned()));
        }
    }
    let input = SignInput {
        secret,
        body,
        now: now_unix,
    };
    Ok(match scheme {
        Scheme::Stripe => stripe::sign(&input),
        Scheme::Github => github::sign(&input),
        Scheme::Standard => standard::sign(&input, msg_id)?,
        Scheme::Slack => slack::sign(&input),
        Scheme::Shopify => shopify::sign(&input),
        Scheme::HmacSha256 => hmac::sign(&input, header),
        Scheme::HeaderSecret => header_secret::sign(&input, header)?,
    })
}

/// One request as the scheme verifiers see it.
struct Request<'a> {
    headers: &'a [(&'a [u8], &'a [u8])],
    body: &'a [u8],
    secret: &'a str,
    now: i64,
    tolerance_s: u64,
}

/// `Ok(detail)` when valid, `Err(detail)` otherwise.
type Outcome = Result<String, String>;

impl<'a> Request<'a> {
    /// First header with this name (case-insensitive), surrounding whitespace trimmed.
    fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.trim_ascii())
    }

    /// Like `header`, but a missing header is an error naming it.
    fn require(&self, name: &str) -> Result<&'a [u8], String> {
        self.header(name)
            .ok_or_else(|| format!("missing {name} header"))
    }

    /// Like `require`, as UTF-8 text (signature headers are ASCII by definition).
    fn require_str(&self, name: &str) -> Result<&'a str, String> {
        std::str::from_utf8(self.require(name)?)
            .map_err(|_| format!("{name} header is not valid text"))
    }
}

/// What the scheme signers need.
struct SignInput<'a> {
    secret: &'a str,
    body: &'a [u8],
    now: i64,
}

/// HMAC-SHA256 of the concatenation of `parts`, so signed content is never copied.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// True when any candidate equals `expected`. Every candidate is compared in constant
/// time and none is skipped, so timing reveals nothing beyond the number of candidates.
fn any_matches<I>(expected: &[u8], candidates: I) -> bool
where
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    candidates
        .into_iter()
        .fold(Choice::from(0), |acc, c| acc | expected.ct_eq(c.as_ref()))
        .into()
}

/// Base64 that accepts padded and unpadded input, as secrets and signatures come both ways.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes base64 in either padding style; `None` if it is not base64.
fn b64_decode(s: &[u8]) -> Option<Vec<u8>> {
    base64::Engine::decode(&BASE64, s).ok()
}

/// Encodes padded base64, as every sender we imitate does.
fn b64_encode(bytes: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
}

/// Parses a unix-seconds timestamp: ASCII digits only (no sign, no fraction).
fn parse_timestamp(raw: &[u8], what: &str) -> Result<i64, String> {
    let ok = !raw.is_empty() && raw.len() <= 18 && raw.iter().all(u8::is_ascii_digit);
    ok.then(|| std::str::from_utf8(raw).ok()?.parse().ok())
        .flatten()
        .ok_or_else(|| format!("{what} is not a unix timestamp"))
}

/// Checks that `ts` is within `tolerance_s` of `now`, either way; the error says by how much.
fn check_timestamp(ts: i64, req: &Request, what: &str) -> Result<(), String> {
    // i128: neither a huge tolerance nor an extreme `now` can overflow.
    let age = i128::from(req.now) - i128::from(ts);
    let tolerance = i128::from(req.tolerance_s);
    if age > tolerance {
        Err(format!("{what} is {age} s old (tolerance {tolerance} s)"))
    } else if -age > tolerance {
        Err(format!(
            "{what} is {} s in the future (tolerance {tolerance} s)",
            -age
        ))
    } else {
        Ok(())
    }
}

/// Combines a signature check with a timestamp check into one outcome, so a stale but
/// correctly signed request says both that the secret is right and how old it is.
fn timestamped_outcome(
    matched: bool,
    header: &str,
    ts: i64,
    ts_what: &str,
    req: &Request,
) -> Outcome {
    match (matched, check_timestamp(ts, req, ts_what)) {
        (true, Ok(())) => Ok(format!("{header} matches")),
        (true, Err(stale)) => Err(format!("{header} matches but {stale}")),
        (false, Ok(())) => Err(no_match(header)),
        (false, Err(stale)) => Err(format!("{}; also {stale}", no_match(header))),
    }
}

/// The detail for a well-formed signature header that does not verify.
fn no_match(header: &str) -> String {
    format!("{header} does not match (wrong secret or modified body)")
}

/// Verifies a header carrying one or more encoded MACs of the raw body (comma or space
/// separated, for key rotation); shared by github, shopify and generic hmac-sha256.
fn verify_body_mac(req: &Request, header: &str, encoding: Encoding) -> Outcome {
    let raw = req.require(header)?;
    let expected = hmac_sha256(req.secret.as_bytes(), &[req.body]);
    let candidates = decode_signatures(split_list(raw), encoding);
    if mac_matches(&expected, &candidates, header, encoding)? {
        Ok(format!("{header} matches"))
    } else {
        Err(no_match(header))
    }
}

/// Signs the raw body the way `verify_body_mac` checks it.
fn sign_body_mac(input: &SignInput, header: &str, encoding: Encoding) -> Vec<(String, String)> {
    let mac = hmac_sha256(input.secret.as_bytes(), &[input.body]);
    vec![(header.to_owned(), encoding.encode(&mac))]
}

/// How a scheme writes one signature in its header.
#[derive(Clone, Copy)]
struct Encoding {
    /// Text before the encoded MAC, matched case-insensitively (e.g. `sha256=`).
    prefix: &'static str,
    /// Whether a value without `prefix` is still accepted.
    prefix_optional: bool,
    /// Base64 (true) or hex in either case (false).
    base64: bool,
    /// The expected form, for error details.
    hint: &'static str,
}

impl Encoding {
    /// The MAC as a sender writes it (lower-case hex, padded base64).
    fn encode(&self, mac: &[u8]) -> String {
        let body = if self.base64 {
            b64_encode(mac)
        } else {
            hex::encode(mac)
        };
        format!("{}{body}", self.prefix)
    }

    /// One candidate back to MAC bytes; `None` if it has the wrong form or length.
    fn decode(&self, item: &[u8]) -> Option<Vec<u8>> {
        let encoded = match strip_prefix_ci(item, self.prefix) {
            Some(rest) => rest,
            None if self.prefix_optional => item,
            None => return None,
        };
        let mac = if self.base64 {
            b64_decode(encoded)
        } else {
            hex::decode(encoded).ok()
        };
        mac.filter(|m| m.len() == 32)
    }
}

/// Every candidate that decodes to a SHA-256-sized MAC; malformed ones are dropped.
fn decode_signatures<'a>(
    items: impl IntoIterator<Item = &'a [u8]>,
    encoding: Encoding,
) -> Vec<Vec<u8>> {
    items
        .into_iter()
        .filter_map(|item| encoding.decode(item))
        .collect()
}

/// Whether `expected` is among `candidates`; no well-formed candidate at all is a format error.
fn mac_matches(
    expected: &[u8],
    candidates: &[Vec<u8>],
    header: &str,
    encoding: Encoding,
) -> Result<bool, String> {
    if candidates.is_empty() {
        return Err(format!("{header} is not {}", encoding.hint));
    }
    Ok(any_matches(expected, candidates))
}

/// Splits a header value listing several signatures, by commas and/or whitespace.
fn split_list(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    raw.split(|b| *b == b',' || b.is_ascii_whitespace())
        .filter(|item| !item.is_empty())
}

/// `raw` without `prefix`, matched case-insensitively; `None` if it lacks the prefix.
fn strip_prefix_ci<'a>(raw: &'a [u8], prefix: &str) -> Option<&'a [u8]> {
    let p = prefix.as_bytes();
    (raw.len() >= p.len() && raw[..p.len()].eq_ignore_ascii_case(p)).then(|| &raw[p.len()..])
}
