//! Webhook signature schemes (placeholder types until the verifier lands).

use serde::{Deserialize, Serialize};

/// A signature scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    /// Stripe.
    Stripe,
    /// GitHub.
    Github,
    /// Standard Webhooks.
    Standard,
    /// Slack.
    Slack,
    /// Shopify.
    Shopify,
    /// Generic hex HMAC.
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    /// Shared secret in a header.
    HeaderSecret,
}

/// Verification result.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Verdict {
    /// Scheme.
    pub scheme: Scheme,
    /// Valid or not.
    pub valid: bool,
    /// What was checked.
    pub detail: String,
}

/// What a bin verifies with.
pub struct VerifyConfig<'a> {
    /// Scheme.
    pub scheme: Scheme,
    /// Secret.
    pub secret: &'a str,
    /// Header override.
    pub header: Option<&'a str>,
    /// Tolerance.
    pub tolerance_s: u64,
}

/// Verify.
pub fn verify(cfg: &VerifyConfig, _headers: &[(&[u8], &[u8])], _body: &[u8], _now: i64) -> Verdict {
    Verdict {
        scheme: cfg.scheme,
        valid: false,
        detail: "verifier not built yet".into(),
    }
}
