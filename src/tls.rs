//! TLS setup shared by every HTTP client of the crate.

/// rustls needs exactly one process-wide crypto provider; slurmlab builds with ring only.
/// Idempotent; called by every client constructor so library users need not care.
pub fn ensure_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means another provider was installed first: that one is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
