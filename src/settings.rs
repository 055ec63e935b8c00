//! Per-bin settings: custom response, forward targets, signature verification; validation and merge patch.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;
use crate::signature::Scheme;

/// Largest ring capacity a bin may ask for.
pub const MAX_CAPACITY: u32 = 10_000;
/// Most forward targets per bin.
pub const MAX_FORWARD_TARGETS: usize = 5;
/// Longest custom response delay.
pub const MAX_DELAY_MS: u64 = 30_000;
/// Largest custom response body.
pub const MAX_RESPONSE_BODY: usize = 256 * 1024;

/// A bin's settings (the stored form; `verify.secret` is present here and never shown).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Ring buffer capacity.
    pub capacity: u32,
    /// Custom response; `null` means `200 {}`.
    #[serde(default)]
    pub response: Option<CustomResponse>,
    /// Auto-forward targets (≤ 5).
    #[serde(default)]
    pub forward: Vec<ForwardTarget>,
    /// Signature verification.
    #[serde(default)]
    pub verify: Option<VerifySettings>,
}

/// What the bin answers senders.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CustomResponse {
    /// Status code (200–599).
    #[serde(default = "default_status")]
    pub status: u16,
    /// Ordered `[name, value]` pairs.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Body text.
    #[serde(default)]
    pub body: String,
    /// Delay before answering (≤ 30000).
    #[serde(default)]
    pub delay_ms: u64,
}

fn default_status() -> u16 {
    200
}

/// One auto-forward target.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ForwardTarget {
    /// Target URL (http or https).
    pub url: String,
    /// Retries after the first attempt.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Per-attempt timeout.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_retries() -> u32 {
    3
}
fn default_timeout_ms() -> u64 {
    10_000
}

/// Signature verification settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VerifySettings {
    /// Scheme name.
    pub scheme: Scheme,
    /// Secret (write-only).
    #[serde(default)]
    pub secret: Option<String>,
    /// Header to read (hmac-sha256, header-secret).
    #[serde(default)]
    pub header: Option<String>,
    /// Timestamp tolerance in seconds.
    #[serde(default = "default_tolerance")]
    pub tolerance_s: u64,
    /// Answer 401 to bad or missing signatures.
    #[serde(default)]
    pub reject_invalid: bool,
}

fn default_tolerance() -> u64 {
    300
}

/// Headers a custom response may not set.
fn forbidden_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "set-cookie"
            | "strict-transport-security"
            | "alt-svc"
            | "clear-site-data"
            | "content-length"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
    ) || n.starts_with("content-security-policy")
        || n.starts_with("proxy-")
}

impl Settings {
    /// Defaults for a new bin.
    pub fn with_capacity(capacity: u32) -> Settings {
        Settings {
            capacity,
            response: None,
            forward: Vec::new(),
            verify: None,
        }
    }

    /// Check ranges and names; errors name the field.
    pub fn validate(&self) -> Result<(), ApiError> {
        let bad = |field: &str, why: String| {
            ApiError::bad_request("invalid_settings", format!("{field}: {why}"))
        };
        if !(1..=MAX_CAPACITY).contains(&self.capacity) {
            return Err(bad(
                "capacity",
                format!("must be between 1 and {MAX_CAPACITY}"),
            ));
        }
        if let Some(r) = &self.response {
            if !(200..=599).contains(&r.status) {
                return Err(bad("response.status", "must be between 200 and 599".into()));
            }
            if r.delay_ms > MAX_DELAY_MS {
                return Err(bad(
                    "response.delay_ms",
                    format!("must be at most {MAX_DELAY_MS}"),
                ));
            }
            if r.body.len() > MAX_RESPONSE_BODY {
                return Err(bad("response.body", "must be at most 256 KiB".into()));
            }
            if r.headers.len() > 64 {
                return Err(bad("response.headers", "at most 64 headers".into()));
            }
            for (name, value) in &r.headers {
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err(bad(
                        "response.headers",
                        format!("`{name}` is not a valid header name"),
                    ));
                }
                if http::HeaderValue::from_str(value).is_err() {
                    return Err(bad(
                        "response.headers",
                        format!("value of `{name}` is not a valid header value"),
                    ));
                }
                if forbidden_header(name) {
                    return Err(bad(
                        "response.headers",
                        format!("`{name}` may not be set by a custom response"),
                    ));
                }
            }
        }
        if self.forward.len() > MAX_FORWARD_TARGETS {
            return Err(bad(
                "forward",
                format!("at most {MAX_FORWARD_TARGETS} targets"),
            ));
        }
        for (i, target) in self.forward.iter().enumerate() {
            let uri: http::Uri = target
                .url
                .parse()
                .map_err(|_| bad(&format!("forward[{i}].url"), "not a URL".into()))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return Err(bad(
                    &format!("forward[{i}].url"),
                    "must be an absolute http(s) URL".into(),
                ));
            }
            if target.retries > 10 {
                return Err(bad(
                    &format!("forward[{i}].retries"),
                    "must be at most 10".into(),
                ));
            }
            if !(100..=60_000).contains(&target.timeout_ms) {
                return Err(bad(
                    &format!("forward[{i}].timeout_ms"),
                    "must be between 100 and 60000".into(),
                ));
            }
        }
        if let Some(v) = &self.verify {
            match &v.secret {
                Some(s) if !s.is_empty() && s.len() <= 1024 => {}
                _ => return Err(bad("verify.secret", "required (1–1024 chars)".into())),
            }
            let secret = v.secret.as_deref().unwrap_or_default();
            if v.scheme == Scheme::HeaderSecret && secret.trim() != secret {
                // HTTP strips a header value's surrounding whitespace: it could never match.
                return Err(bad(
                    "verify.secret",
                    "a header-secret may not start or end with whitespace".into(),
                ));
            }
            if v.tolerance_s > 7 * 24 * 3600 {
                return Err(bad("verify.tolerance_s", "must be at most 604800".into()));
            }
            if let Some(h) = &v.header {
                if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    return Err(bad("verify.header", "not a valid header name".into()));
                }
            }
        }
        Ok(())
    }

    /// The public view: secrets replaced by `secret: null, secret_set: true`.
    pub fn public_json(&self) -> Value {
        let mut value = serde_json::to_value(self).expect("settings serialize");
        if let Some(verify) = value.get_mut("verify").and_then(Value::as_object_mut) {
            let set = verify.get("secret").is_some_and(|s| !s.is_null());
            verify.insert("secret".into(), Value::Null);
            verify.insert("secret_set".into(), Value::Bool(set));
        }
        value
    }

    /// Parse settings given at bin creation (fields omitted take defaults).
    pub fn from_create_json(body: &[u8], default_capacity: u32) -> Result<Settings, ApiError> {
        let base = Settings::with_capacity(default_capacity);
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(base);
        }
        base.merge_patch(body)
    }

    /// Apply an RFC 7396 merge patch. `verify.secret` omitted or null keeps the old secret
    /// (reads show null, so a read-modify-write must not wipe it); `secret_set` is ignored.
    pub fn merge_patch(&self, patch: &[u8]) -> Result<Settings, ApiError> {
        let mut patch: Value = serde_json::from_slice(patch).map_err(|e| {
            ApiError::bad_request(
                "invalid_json",
                format!("request body is not valid JSON: {e}"),
            )
        })?;
        if !patch.is_object() {
            return Err(ApiError::bad_request(
                "invalid_settings",
                "settings must be a JSON object",
            ));
        }
        if let Some(verify) = patch.get_mut("verify").and_then(Value::as_object_mut) {
            verify.remove("secret_set");
            if verify.get("secret").is_some_and(Value::is_null) {
                verify.remove("secret");
            }
        }
        let mut doc = serde_json::to_value(self).expect("settings serialize");
        merge(&mut doc, patch);
        let settings: Settings = serde_json::from_value(doc)
            .map_err(|e| ApiError::bad_request("invalid_settings", format!("settings: {e}")))?;
        settings.validate()?;
        Ok(settings)
    }
}

/// RFC 7396 JSON merge patch; arrays (e.g. `forward`) are replaced whole.
fn merge(target: &mut Value, patch: Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            let obj = target.as_object_mut().expect("just made an object");
            for (key, value) in fields {
                if value.is_null() {
                    obj.remove(&key);
                } else {
                    merge(obj.entry(key).or_insert(Value::Null), value);
                }
            }
        }
        other => *target = other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_keeps_secret_and_rejects_bad_fields() {
        let s = Settings::with_capacity(500)
            .merge_patch(br#"{"verify":{"scheme":"github","secret":"s3cret"}}"#)
            .unwrap();
        let s2 = s
            .merge_patch(br#"{"verify":{"tolerance_s":10,"secret":null,"secret_set":true}}"#)
            .unwrap();
        assert_eq!(
            s2.verify.as_ref().unwrap().secret.as_deref(),
            Some("s3cret")
        );
        assert_eq!(s2.public_json()["verify"]["secret"], Value::Null);
        assert_eq!(s2.public_json()["verify"]["secret_set"], Value::Bool(true));
        assert!(s.merge_patch(br#"{"capacity":0}"#).is_err());
        assert!(s.merge_patch(br#"{"capacity":10001}"#).is_err());
        assert!(s.merge_patch(br#"{"nope":1}"#).is_err());
        assert!(s.merge_patch(b"{").is_err());
        let err = s
            .merge_patch(br#"{"response":{"headers":[["Set-Cookie","a=b"]]}}"#)
            .unwrap_err();
        assert!(err.message.contains("Set-Cookie"), "{}", err.message);
        let spaced = s.merge_patch(br#"{"verify":{"scheme":"header-secret","secret":" x "}}"#);
        assert!(spaced.is_err());
        let s3 = s.merge_patch(br#"{"verify":null}"#).unwrap();
        assert!(s3.verify.is_none());
    }
}
