//! docs/decisions.md D18: no string the API stores may hold U+0000 (Postgres `text` cannot, and one
//! such value once failed every write-behind flush). One layer over the gRPC routes — which every
//! transport reaches, REST included — reads each request message as it streams in, guided by the
//! service descriptors: string fields must hold no NUL byte, and JSON text (`*_json` fields,
//! request `body` bytes) no `\u0000` escape either. An offending message fails its call with a 400
//! naming the field before any handler sees it, so nothing changes. Nothing is buffered: the scan
//! keeps a small state across chunks. The gRPC edge applies it.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use axum::{body::Body, extract::Request};
use bytes::Bytes;
use http_body::Frame;
use prost::Message;
use prost_types::{FieldDescriptorProto, field_descriptor_proto::Type};

use crate::error::ApiError;

/// Agent plumbing streams are not judged here: a reply an agent sends is relayed, and what
/// is stored of it is made safe where it is stored.
const UNCHECKED_SERVICES: [&str; 2] = ["/molecule.v1.AgentInbound/", "/molecule.v1.Replicas/"];

/// How a field's bytes are judged.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// A string: no NUL byte.
    Text,
    /// JSON text: no NUL byte and no `\u0000` escape.
    Json,
    /// A nested message, by full name.
    Message(Arc<str>),
    /// Numbers, binary data: skipped.
    Opaque,
}

#[derive(Debug, Clone)]
struct Field {
    /// The name callers know the field by (`agent_card` for `agent_card_json`).
    name: Arc<str>,
    kind: Kind,
}

#[derive(Debug, Default)]
struct MessageInfo {
    fields: HashMap<u32, Field>,
    /// A map's entry type or a one-`value` wrapper (`NullableString`): its strings are reported
    /// under the name of the field that holds it.
    reports_as_holder: bool,
}

/// The request message type of every method, and the fields of every message.
#[derive(Debug, Default)]
pub struct Index {
    inputs: HashMap<String, Arc<str>>,
    messages: HashMap<Arc<str>, MessageInfo>,
}

impl Index {
    /// From the descriptors the server was built with.
    pub fn from_descriptors(encoded: &[u8]) -> Result<Self, prost::DecodeError> {
        let set = prost_types::FileDescriptorSet::decode(encoded)?;
        let mut index = Self::default();
        for file in &set.file {
            let package = file.package();
            for service in &file.service {
                for method in &service.method {
                    index.inputs.insert(
                        format!("/{package}.{}/{}", service.name(), method.name()),
                        Arc::from(method.input_type().trim_start_matches('.')),
                    );
                }
            }
            for message in &file.message_type {
                index.add_message(package, message);
            }
        }
        Ok(index)
    }

    fn add_message(&mut self, scope: &str, message: &prost_types::DescriptorProto) {
        let full_name = format!("{scope}.{}", message.name());
        let fields = message
            .field
            .iter()
            .map(|field| (u32::try_from(field.number()).unwrap_or(0), describe(field)))
            .collect();
        let map_entry = message
            .options
            .as_ref()
            .is_some_and(|options| options.map_entry());
        let wrapper = matches!(message.field.as_slice(), [only] if only.name() == "value");
        for nested in &message.nested_type {
            self.add_message(&full_name, nested);
        }
        self.messages.insert(
            Arc::from(full_name),
            MessageInfo {
                fields,
                reports_as_holder: map_entry || wrapper,
            },
        );
    }
}

fn describe(field: &FieldDescriptorProto) -> Field {
    let name = field.name();
    let kind = match field.r#type() {
        Type::String if name.ends_with("_json") => Kind::Json,
        Type::String => Kind::Text,
        // Request bodies relayed and stored as text: JSON-RPC envelopes.
        Type::Bytes if name == "body" => Kind::Json,
        Type::Message => Kind::Message(Arc::from(field.type_name().trim_start_matches('.'))),
        _ => Kind::Opaque,
    };
    Field {
        name: Arc::from(name.strip_suffix("_json").unwrap_or(name)),
        kind,
    }
}

impl Index {
    /// The request with its body read through the scan (requests of unchecked or unknown
    /// methods unchanged).
    pub fn scan(self: &Arc<Self>, request: Request) -> Request {
        let path = request.uri().path();
        if UNCHECKED_SERVICES
            .iter()
            .any(|service| path.starts_with(service))
        {
            return request;
        }
        let Some(input) = self.inputs.get(path).cloned() else {
            return request;
        };
        request.map(|body| {
            Body::new(Scanned {
                inner: body,
                scanner: Scanner::new(self.clone(), input),
            })
        })
    }
}

struct Scanned {
    inner: Body,
    scanner: Scanner,
}

impl http_body::Body for Scanned {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
            && let Err(field) = self.scanner.feed(data)
        {
            let error = ApiError::bad_request(format!("{field} must not contain U+0000"));
            return Poll::Ready(Some(Err(axum::Error::new(tonic::Status::from(error)))));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A varint being read, possibly across chunks.
#[derive(Debug, Default, Clone, Copy)]
struct Varint {
    value: u64,
    shift: u32,
}

impl Varint {
    /// Takes one byte; the value once complete.
    fn push(&mut self, byte: u8) -> Option<u64> {
        if self.shift < 64 {
            self.value |= u64::from(byte & 0x7f) << self.shift;
        }
        self.shift += 7;
        (byte & 0x80 == 0).then(|| std::mem::take(self).value)
    }
}

/// Where a `\u0000` escape may be in JSON text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    Backslash,
    /// After `\u`, this many hex digits seen, all zero so far.
    Zeros(u8),
}

#[derive(Debug)]
enum Step {
    /// The 5-byte gRPC message header.
    Header {
        have: usize,
        header: [u8; 5],
    },
    /// The rest of a message this scanner cannot judge (compressed, malformed): the decoder
    /// will.
    Blind(u64),
    Tag(Varint),
    /// Passing over a varint's bytes.
    VarintValue,
    Length {
        field: Option<Field>,
        varint: Varint,
    },
    /// Bytes to pass over unread.
    Skip(u64),
    /// A string's bytes, judged as they pass.
    Text {
        field: Field,
        left: u64,
        escape: Escape,
    },
}

const NEXT_HEADER: Step = Step::Header {
    have: 0,
    header: [0; 5],
};

/// One message being read: its type and how many of its bytes are still to come.
#[derive(Debug)]
struct Nesting {
    message: Arc<str>,
    left: u64,
    /// The name its strings are reported under (the field holding a map entry or wrapper).
    report_as: Option<Arc<str>>,
}

struct Scanner {
    index: Arc<Index>,
    input: Arc<str>,
    step: Step,
    stack: Vec<Nesting>,
}

impl Scanner {
    fn new(index: Arc<Index>, input: Arc<str>) -> Self {
        Self {
            index,
            input,
            step: NEXT_HEADER,
            stack: Vec::new(),
        }
    }

    /// Reads a chunk; the name of the first field holding U+0000, if any.
    fn feed(&mut self, mut data: &[u8]) -> Result<(), String> {
        while !data.is_empty() {
            let used = self.step(data)?;
            data = &data[used..];
        }
        Ok(())
    }

    /// Consumes some bytes of `data` (at least one); returns how many.
    fn step(&mut self, data: &[u8]) -> Result<usize, String> {
        let (next, used, opened) = match std::mem::replace(&mut self.step, NEXT_HEADER) {
            Step::Header {
                mut have,
                mut header,
            } => {
                let take = (5 - have).min(data.len());
                header[have..have + take].copy_from_slice(&data[..take]);
                have += take;
                self.step = if have < 5 {
                    Step::Header { have, header }
                } else {
                    let length = u64::from(u32::from_be_bytes([
                        header[1], header[2], header[3], header[4],
                    ]));
                    match (header[0], length) {
                        (_, 0) => NEXT_HEADER,
                        (0, _) => {
                            self.stack.push(Nesting {
                                message: self.input.clone(),
                                left: length,
                                report_as: None,
                            });
                            Step::Tag(Varint::default())
                        }
                        // Compressed: only the decoder can read it.
                        _ => Step::Blind(length),
                    }
                };
                return Ok(take);
            }
            Step::Blind(left) => {
                let take = clamp(left, data.len());
                let left = left - take as u64;
                self.step = if left == 0 {
                    NEXT_HEADER
                } else {
                    Step::Blind(left)
                };
                return Ok(take);
            }
            Step::Tag(mut varint) => match varint.push(data[0]) {
                None => (Step::Tag(varint), 1, None),
                Some(tag) => match self.after_tag(tag) {
                    Some(next) => (next, 1, None),
                    None => {
                        // Groups, or not protobuf: the decoder will judge this message.
                        self.count(1);
                        let rest = self.stack.first().map_or(0, |outer| outer.left);
                        self.stack.clear();
                        self.step = if rest == 0 {
                            NEXT_HEADER
                        } else {
                            Step::Blind(rest)
                        };
                        return Ok(1);
                    }
                },
            },
            Step::VarintValue => {
                let next = if data[0] & 0x80 == 0 {
                    Step::Tag(Varint::default())
                } else {
                    Step::VarintValue
                };
                (next, 1, None)
            }
            Step::Length { field, mut varint } => match varint.push(data[0]) {
                None => (Step::Length { field, varint }, 1, None),
                Some(length) => {
                    let (next, opened) = self.open_field(field, length);
                    (next, 1, opened)
                }
            },
            Step::Skip(left) => {
                let take = clamp(left, data.len());
                (skip(left - take as u64), take, None)
            }
            Step::Text {
                field,
                left,
                mut escape,
            } => {
                let take = clamp(left, data.len());
                let chunk = &data[..take];
                if chunk.contains(&0)
                    || (field.kind == Kind::Json && has_nul_escape(chunk, &mut escape))
                {
                    return Err(self.report_name(&field));
                }
                let left = left - take as u64;
                let next = if left == 0 {
                    Step::Tag(Varint::default())
                } else {
                    Step::Text {
                        field,
                        left,
                        escape,
                    }
                };
                (next, take, None)
            }
        };
        self.count(used);
        self.stack.extend(opened);
        self.step = if self.stack.is_empty() {
            NEXT_HEADER
        } else {
            next
        };
        Ok(used)
    }

    /// Counts `used` bytes against every open message, closing those that end.
    fn count(&mut self, used: usize) {
        for nesting in &mut self.stack {
            nesting.left = nesting.left.saturating_sub(used as u64);
        }
        while self.stack.last().is_some_and(|nesting| nesting.left == 0) {
            self.stack.pop();
        }
    }

    /// What follows a field's tag; `None` for wire types this scanner does not read.
    fn after_tag(&self, tag: u64) -> Option<Step> {
        let number = u32::try_from(tag >> 3).unwrap_or(0);
        let field = self.stack.last().and_then(|nesting| {
            self.index
                .messages
                .get(&nesting.message)
                .and_then(|info| info.fields.get(&number))
                .cloned()
        });
        match tag & 7 {
            0 => Some(Step::VarintValue),
            1 => Some(Step::Skip(8)),
            5 => Some(Step::Skip(4)),
            2 => Some(Step::Length {
                field,
                varint: Varint::default(),
            }),
            _ => None,
        }
    }

    /// A length-delimited field begins: what to do with its bytes, and the message it opens.
    fn open_field(&self, field: Option<Field>, length: u64) -> (Step, Option<Nesting>) {
        let Some(field) = field.filter(|_| length > 0) else {
            return (skip(length), None);
        };
        match &field.kind {
            Kind::Text | Kind::Json => (
                Step::Text {
                    field,
                    left: length,
                    escape: Escape::None,
                },
                None,
            ),
            Kind::Message(message) => {
                let holder = self
                    .index
                    .messages
                    .get(message)
                    .is_some_and(|info| info.reports_as_holder);
                let nesting = Nesting {
                    message: message.clone(),
                    left: length,
                    report_as: holder.then(|| field.name.clone()),
                };
                (Step::Tag(Varint::default()), Some(nesting))
            }
            Kind::Opaque => (skip(length), None),
        }
    }

    fn report_name(&self, field: &Field) -> String {
        self.stack
            .iter()
            .rev()
            .find_map(|nesting| nesting.report_as.clone())
            .unwrap_or_else(|| field.name.clone())
            .to_string()
    }
}

fn clamp(left: u64, available: usize) -> usize {
    usize::try_from(left).unwrap_or(usize::MAX).min(available)
}

fn skip(length: u64) -> Step {
    if length == 0 {
        Step::Tag(Varint::default())
    } else {
        Step::Skip(length)
    }
}

/// Whether JSON text holds a `\u0000` escape, carrying the escape state across chunks.
fn has_nul_escape(mut chunk: &[u8], state: &mut Escape) -> bool {
    loop {
        // Outside an escape only a backslash matters: skip to it.
        if *state == Escape::None {
            match chunk.iter().position(|byte| *byte == b'\\') {
                Some(at) => chunk = &chunk[at..],
                None => return false,
            }
        }
        let Some((&byte, rest)) = chunk.split_first() else {
            return false;
        };
        chunk = rest;
        *state = match (*state, byte) {
            (Escape::None, b'\\') => Escape::Backslash,
            (Escape::None, _) => Escape::None,
            (Escape::Backslash, b'u') => Escape::Zeros(0),
            (Escape::Backslash, _) => Escape::None,
            (Escape::Zeros(3), b'0') => return true,
            (Escape::Zeros(seen), b'0') => Escape::Zeros(seen + 1),
            (Escape::Zeros(_), b'\\') => Escape::Backslash,
            (Escape::Zeros(_), _) => Escape::None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    fn index() -> Arc<Index> {
        Arc::new(Index::from_descriptors(pb::FILE_DESCRIPTOR_SET).unwrap())
    }

    fn framed(message: &impl Message) -> Vec<u8> {
        let body = message.encode_to_vec();
        let mut framed = vec![0];
        framed.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
        framed.extend_from_slice(&body);
        framed
    }

    /// Feeds `bytes` in chunks of every size from 1 to 7.
    fn verdicts(input: &str, bytes: &[u8]) -> Vec<Result<(), String>> {
        (1..=7)
            .map(|size| {
                let mut scanner = Scanner::new(index(), Arc::from(input));
                bytes.chunks(size).try_for_each(|chunk| scanner.feed(chunk))
            })
            .collect()
    }

    #[test]
    fn a_nul_in_a_nested_string_is_named_in_every_chunking() {
        let beat = pb::AgentFrame {
            frame: Some(pb::agent_frame::Frame::Beat(pb::Beat {
                sequence: 7,
                heartbeat: Some(pb::HeartbeatRequest {
                    workspace_id: "w".into(),
                    uptime_seconds: 300,
                    sample_error: "bad\0byte".into(),
                    ..Default::default()
                }),
            })),
        };
        let mut two = framed(&pb::AgentFrame::default());
        two.extend(framed(&beat));
        for verdict in verdicts("molecule.v1.AgentFrame", &two) {
            assert_eq!(verdict, Err("sample_error".to_owned()));
        }
    }

    #[test]
    fn clean_messages_pass_and_json_escapes_are_judged_exactly() {
        let clean = pb::RegisterRequest {
            id: "i".into(),
            url: "remote://x".into(),
            agent_card_json: r#"{"name":"a\\u0000b","n":"\u0041\u0030"}"#.into(),
        };
        for verdict in verdicts("molecule.v1.RegisterRequest", &framed(&clean)) {
            assert_eq!(verdict, Ok(()));
        }
        let escaped = pb::RegisterRequest {
            agent_card_json: r#"{"name":"a\u0000b"}"#.into(),
            ..clean
        };
        for verdict in verdicts("molecule.v1.RegisterRequest", &framed(&escaped)) {
            assert_eq!(verdict, Err("agent_card".to_owned()));
        }
    }

    #[test]
    fn map_values_are_reported_under_the_map() {
        let request = pb::ProxyRequest {
            target_workspace_id: "t".into(),
            body: br#"{"jsonrpc":"2.0"}"#.to_vec(),
            timeout_seconds: None,
            forward_headers: [("traceparent".to_owned(), "a\0b".to_owned())]
                .into_iter()
                .collect(),
        };
        for verdict in verdicts("molecule.v1.ProxyRequest", &framed(&request)) {
            assert_eq!(verdict, Err("forward_headers".to_owned()));
        }
        let body = pb::ProxyRequest {
            body: br#"{"params":{"text":"\u0000"}}"#.to_vec(),
            forward_headers: Default::default(),
            ..request
        };
        for verdict in verdicts("molecule.v1.ProxyRequest", &framed(&body)) {
            assert_eq!(verdict, Err("body".to_owned()));
        }
    }
}
