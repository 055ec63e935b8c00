//! `header-secret`: no signature, the shared secret itself travels in a header
//! (RapidAPI's `X-RapidAPI-Webhook-Secret` and many in-house senders).

use super::{any_matches, Outcome, Request, SignError, SignInput};
use sha2::{Digest, Sha256};

/// Header used when none is configured.
const DEFAULT_HEADER: &str = "x-rapidapi-webhook-secret";

/// Checks that the header equals the secret. Both sides are hashed first so the
/// constant-time comparison does not leak the secret's length either.
pub(super) fn verify(req: &Request, header: Option<&str>) -> Outcome {
    let name = header.unwrap_or(DEFAULT_HEADER);
    let given = Sha256::digest(req.require(name)?);
    let expected = Sha256::digest(req.secret.as_bytes());
    if any_matches(&expected, [given]) {
        Ok(format!("{name} matches"))
    } else {
        Err(format!("{name} does not match the configured secret"))
    }
}

/// Produces the header with the secret as its value.
pub(super) fn sign(
    input: &SignInput,
    header: Option<&str>,
) -> Result<Vec<(String, String)>, SignError> {
    if http::HeaderValue::from_str(input.secret).is_err() {
        return Err(SignError::InvalidHeaderValue("secret"));
    }
    let name = header.unwrap_or(DEFAULT_HEADER);
    Ok(vec![(name.to_owned(), input.secret.to_owned())])
}
