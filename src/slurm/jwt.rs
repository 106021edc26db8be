//! SLURM `auth/jwt` tokens minted from the cluster's HS256 key, as `scontrol token` does.
//!
//! Claims: `sun` (the SLURM user the token acts as), `iat`, `exp`. slurmctld checks the
//! signature with the same `jwt_key` file.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Signs a token for `user`, valid from `issued_at` (Unix seconds) for `lifetime_secs`.
pub fn mint(key: &[u8], user: &str, issued_at: u64, lifetime_secs: u64) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "exp": issued_at + lifetime_secs,
        "iat": issued_at,
        "sun": user,
    });
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_token_signed_by_the_reference_minter() {
        // Produced by mint-jwt.py (the reference recipe) with key b"k"*32, user slurmjob,
        // iat 1700000000 and a 3600 s lifetime.
        let want = concat!(
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.",
            "eyJleHAiOjE3MDAwMDM2MDAsImlhdCI6MTcwMDAwMDAwMCwic3VuIjoic2x1cm1qb2IifQ.",
            "2uF2bmUlAqOLw215Nkw7Rg9J_5K9VsdSV-rPBLeiTTM"
        );
        assert_eq!(mint(&[b'k'; 32], "slurmjob", 1_700_000_000, 3600), want);
    }
}
