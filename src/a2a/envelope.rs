//! Body normalization (docs/a2a.md §1.6), raw-preserving: only the parts the platform changes are
//! re-encoded, so key order and numbers beyond 2^53 reach the agent exactly as sent.

use indexmap::IndexMap;
use serde_json::value::RawValue;

use super::ProxyError;

type RawObject = IndexMap<String, Box<RawValue>>;

/// Methods whose answer is an SSE stream (never queued).
const STREAMING_METHODS: [&str; 4] = [
    "message/stream",
    "tasks/resubscribe",
    "SendStreamingMessage",
    "SubscribeToTask",
];

/// A normalized JSON-RPC request.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The bytes sent to the agent.
    pub body: String,
    /// `""` when the method is not a string.
    pub method: String,
    /// `params.message.messageId`, when the request carries a message.
    pub message_id: Option<String>,
}

impl Envelope {
    pub fn is_streaming(&self) -> bool {
        STREAMING_METHODS.contains(&self.method.as_str())
    }
}

fn invalid() -> ProxyError {
    ProxyError::InvalidJson
}

fn raw(text: String) -> Box<RawValue> {
    RawValue::from_string(text).expect("serde_json output is valid JSON")
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Box<RawValue>, ProxyError> {
    serde_json::to_string(value)
        .map(raw)
        .map_err(|_| ProxyError::Internal("failed to marshal request"))
}

/// Wraps a bare `{method, params}` body into JSON-RPC 2.0 and gives a message without a
/// `messageId` a fresh one. Nothing else changes.
pub fn normalize(body: &[u8]) -> Result<Envelope, ProxyError> {
    let mut top: RawObject = serde_json::from_slice(body).map_err(|_| invalid())?;
    if !top.contains_key("jsonrpc") {
        let null = || raw("null".to_owned());
        let mut wrapped = RawObject::with_capacity(4);
        wrapped.insert("jsonrpc".to_owned(), raw("\"2.0\"".to_owned()));
        wrapped.insert("id".to_owned(), encode(&uuid::Uuid::new_v4().to_string())?);
        wrapped.insert(
            "method".to_owned(),
            top.shift_remove("method").unwrap_or_else(null),
        );
        wrapped.insert(
            "params".to_owned(),
            top.shift_remove("params").unwrap_or_else(null),
        );
        top = wrapped;
    }
    let method = top
        .get("method")
        .and_then(|value| serde_json::from_str::<String>(value.get()).ok())
        .unwrap_or_default();
    let mut message_id = None;
    if let Some(params) = top.get_mut("params")
        && let Ok(mut params_object) = serde_json::from_str::<RawObject>(params.get())
        && let Some(message) = params_object.get_mut("message")
        && let Ok(mut message_object) = serde_json::from_str::<RawObject>(message.get())
    {
        match message_object.get("messageId") {
            Some(existing) => {
                message_id = serde_json::from_str::<String>(existing.get()).ok();
            }
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                message_object.insert("messageId".to_owned(), encode(&id)?);
                *message = encode(&message_object)?;
                *params = encode(&params_object)?;
                message_id = Some(id);
            }
        }
    }
    Ok(Envelope {
        body: serde_json::to_string(&top)
            .map_err(|_| ProxyError::Internal("failed to marshal request"))?,
        method,
        message_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_body_is_wrapped_and_its_message_gets_an_id() {
        let envelope = normalize(
            br#"{"method":"message/send","params":{"message":{"role":"user","parts":[{"kind":"text","text":"hi"}]},"metadata":{"n":12345678901234567890}},"extra":1}"#,
        )
        .unwrap();
        assert_eq!(envelope.method, "message/send");
        let id = envelope.message_id.clone().unwrap();
        let value: serde_json::Value = serde_json::from_str(&envelope.body).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["jsonrpc", "id", "method", "params"]);
        assert_eq!(value["params"]["message"]["messageId"], id.as_str());
        // Untouched parts keep their bytes: a number beyond 2^53 survives exactly.
        assert!(
            envelope
                .body
                .contains(r#""metadata":{"n":12345678901234567890}"#)
        );
        assert!(!envelope.body.contains("extra"));
    }

    #[test]
    fn a_json_rpc_body_is_kept_byte_for_byte_when_nothing_is_missing() {
        let body =
            r#"{"jsonrpc":"2.0","id":7,"method":"tasks/get","params":{"id":"t","z":1,"a":2}}"#;
        let envelope = normalize(body.as_bytes()).unwrap();
        assert_eq!(envelope.body, body);
        assert_eq!(envelope.message_id, None);
        let with_message = r#"{"jsonrpc":"2.0","id":"x","method":"message/stream","params":{"message":{"messageId":"m-1","parts":[]}}}"#;
        let envelope = normalize(with_message.as_bytes()).unwrap();
        assert_eq!(envelope.body, with_message);
        assert_eq!(envelope.message_id.as_deref(), Some("m-1"));
        assert!(envelope.is_streaming());
    }

    #[test]
    fn only_objects_are_accepted() {
        for body in ["[]", "\"x\"", "{", "", "null"] {
            assert_eq!(
                normalize(body.as_bytes()).unwrap_err(),
                ProxyError::InvalidJson,
                "{body}"
            );
        }
        let odd = normalize(br#"{"method":5}"#).unwrap();
        assert_eq!(odd.method, "");
        assert!(odd.body.contains(r#""params":null"#));
    }
}
