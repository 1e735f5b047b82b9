//! Milliseconds for reports. `std::time::Instant` panics on wasm32-unknown-unknown, so the
//! browser build reads `Date.now()`.

/// A monotonic-enough timestamp in milliseconds.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn now_ms() -> f64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64() * 1000.0
}

#[cfg(target_arch = "wasm32")]
pub(crate) fn now_ms() -> f64 {
    js_sys::Date::now()
}
