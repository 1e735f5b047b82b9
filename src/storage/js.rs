//! What the wasm32 backends share about JS values.

use wasm_bindgen::{JsCast, JsValue};

/// The `name` and `message` of a thrown JS value (a `DOMException`, an `Error`, or anything
/// else, shown as best it can be).
pub(crate) fn error_parts(e: &JsValue) -> (String, String) {
    if let Some(d) = e.dyn_ref::<web_sys::DomException>() {
        return (d.name(), d.message());
    }
    if let Some(err) = e.dyn_ref::<js_sys::Error>() {
        return (err.name().into(), err.message().into());
    }
    (String::new(), e.as_string().unwrap_or_else(|| format!("{e:?}")))
}
