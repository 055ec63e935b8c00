//! Shopify: `X-Shopify-Hmac-Sha256`, the base64 HMAC of the raw body.

use super::{sign_body_mac, verify_body_mac, Encoding, Outcome, Request, SignInput};

/// The header Shopify sends the signature in.
const HEADER: &str = "X-Shopify-Hmac-Sha256";

/// Plain base64, no prefix.
const ENCODING: Encoding = Encoding {
    prefix: "",
    prefix_optional: false,
    base64: true,
    hint: "a base64 HMAC-SHA256",
};

/// Checks `X-Shopify-Hmac-Sha256`.
pub(super) fn verify(req: &Request) -> Outcome {
    verify_body_mac(req, HEADER, ENCODING)
}

/// Produces `X-Shopify-Hmac-Sha256`.
pub(super) fn sign(input: &SignInput) -> Vec<(String, String)> {
    sign_body_mac(input, HEADER, ENCODING)
}
