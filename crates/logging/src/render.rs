//! OTLP records as JSON lines, one object per log record or span: what the `awslogs`
//! driver carries, what a file holds and what CloudWatch Logs receives.

use std::time::{Duration, SystemTime};

use humantime_serde::re::humantime;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::Event;
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};

use crate::pipeline::Payload;

/// Appends one line per record of `payload` to `out`; `on_line` gets each line's
/// timestamp (ms since the epoch) and byte range in `out`, without the newline.
pub fn render(
    payload: &Payload,
    out: &mut Vec<u8>,
    mut on_line: impl FnMut(i64, std::ops::Range<usize>),
) {
    match payload {
        Payload::Logs(req) => {
            for rl in &req.resource_logs {
                let res = Res::new(rl.resource.as_ref());
                for sl in &rl.scope_logs {
                    for rec in &sl.log_records {
                        let t = if rec.time_unix_nano != 0 {
                            rec.time_unix_nano
                        } else {
                            rec.observed_time_unix_nano
                        };
                        let start = out.len();
                        let line = LogLine {
                            res: &res,
                            scope: sl.scope.as_ref(),
                            rec,
                            time: t,
                        };
                        // Writing to a Vec cannot fail, and every value here is serialisable.
                        let _ = serde_json::to_writer(&mut *out, &line);
                        on_line(millis(t), start..out.len());
                        out.push(b'\n');
                    }
                }
            }
        }
        Payload::Spans(req) => {
            for rs in &req.resource_spans {
                let res = Res::new(rs.resource.as_ref());
                for ss in &rs.scope_spans {
                    for span in &ss.spans {
                        let start = out.len();
                        let line = SpanLine {
                            res: &res,
                            scope: ss.scope.as_ref(),
                            span,
                        };
                        let _ = serde_json::to_writer(&mut *out, &line);
                        on_line(millis(span.start_time_unix_nano), start..out.len());
                        out.push(b'\n');
                    }
                }
            }
        }
    }
}

fn millis(nanos: u64) -> i64 {
    if nanos == 0 {
        return SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
    }
    (nanos / 1_000_000) as i64
}

struct Res<'a> {
    service: Option<&'a str>,
    attrs: &'a [KeyValue],
}

impl<'a> Res<'a> {
    fn new(r: Option<&'a Resource>) -> Self {
        let attrs = r.map_or(&[][..], |r| &r.attributes[..]);
        let service = attrs
            .iter()
            .find(|kv| kv.key == "service.name")
            .and_then(
                |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Value::StringValue(s)) => Some(s.as_str()),
                    _ => None,
                },
            );
        Self { service, attrs }
    }
}

struct LogLine<'a> {
    res: &'a Res<'a>,
    scope: Option<&'a InstrumentationScope>,
    rec: &'a LogRecord,
    time: u64,
}

impl Serialize for LogLine<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.rec;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("time", &Time(self.time))?;
        m.serialize_entry("signal", "log")?;
        if let Some(svc) = self.res.service {
            m.serialize_entry("service", svc)?;
        }
        let severity = if r.severity_text.is_empty() {
            severity_name(r.severity_number)
        } else {
            &r.severity_text
        };
        m.serialize_entry("severity", severity)?;
        if let Some(body) = &r.body {
            m.serialize_entry("body", &Any(body))?;
        }
        if !r.trace_id.is_empty() {
            m.serialize_entry("trace_id", &Hex(&r.trace_id))?;
        }
        if !r.span_id.is_empty() {
            m.serialize_entry("span_id", &Hex(&r.span_id))?;
        }
        if !r.event_name.is_empty() {
            m.serialize_entry("event", &r.event_name)?;
        }
        if !r.attributes.is_empty() {
            m.serialize_entry("attributes", &Attrs(&r.attributes))?;
        }
        if let Some(scope) = self.scope.filter(|s| !s.name.is_empty()) {
            m.serialize_entry("scope", &scope.name)?;
        }
        if !self.res.attrs.is_empty() {
            m.serialize_entry("resource", &Attrs(self.res.attrs))?;
        }
        m.end()
    }
}

struct SpanLine<'a> {
    res: &'a Res<'a>,
    scope: Option<&'a InstrumentationScope>,
    span: &'a Span,
}

impl Serialize for SpanLine<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let sp = self.span;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("time", &Time(sp.start_time_unix_nano))?;
        m.serialize_entry("signal", "span")?;
        if let Some(svc) = self.res.service {
            m.serialize_entry("service", svc)?;
        }
        m.serialize_entry("name", &sp.name)?;
        m.serialize_entry("trace_id", &Hex(&sp.trace_id))?;
        m.serialize_entry("span_id", &Hex(&sp.span_id))?;
        if !sp.parent_span_id.is_empty() {
            m.serialize_entry("parent_span_id", &Hex(&sp.parent_span_id))?;
        }
        m.serialize_entry("kind", span_kind(sp.kind))?;
        m.serialize_entry("end", &Time(sp.end_time_unix_nano))?;
        let micros = sp
            .end_time_unix_nano
            .saturating_sub(sp.start_time_unix_nano)
            / 1000;
        m.serialize_entry("duration_us", &micros)?;
        if let Some(st) = &sp.status {
            let code = match st.code {
                1 => "ok",
                2 => "error",
                _ => "unset",
            };
            m.serialize_entry("status", code)?;
            if !st.message.is_empty() {
                m.serialize_entry("status_message", &st.message)?;
            }
        }
        if !sp.attributes.is_empty() {
            m.serialize_entry("attributes", &Attrs(&sp.attributes))?;
        }
        if !sp.events.is_empty() {
            m.serialize_entry("events", &Events(&sp.events))?;
        }
        if let Some(scope) = self.scope.filter(|s| !s.name.is_empty()) {
            m.serialize_entry("scope", &scope.name)?;
        }
        if !self.res.attrs.is_empty() {
            m.serialize_entry("resource", &Attrs(self.res.attrs))?;
        }
        m.end()
    }
}

fn severity_name(n: i32) -> &'static str {
    match n {
        1..=4 => "TRACE",
        5..=8 => "DEBUG",
        9..=12 => "INFO",
        13..=16 => "WARN",
        17..=20 => "ERROR",
        21..=24 => "FATAL",
        _ => "UNSPECIFIED",
    }
}

fn span_kind(k: i32) -> &'static str {
    match k {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

struct Time(u64);

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = SystemTime::UNIX_EPOCH + Duration::from_nanos(self.0);
        s.collect_str(&humantime::format_rfc3339_nanos(t))
    }
}

struct Hex<'a>(&'a [u8]);

impl Serialize for Hex<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut buf = Vec::with_capacity(self.0.len() * 2);
        for b in self.0 {
            buf.push(DIGITS[(b >> 4) as usize]);
            buf.push(DIGITS[(b & 0xf) as usize]);
        }
        s.serialize_str(std::str::from_utf8(&buf).unwrap_or_default())
    }
}

struct Any<'a>(&'a AnyValue);

impl Serialize for Any<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0.value {
            None => s.serialize_unit(),
            Some(Value::StringValue(v)) => s.serialize_str(v),
            Some(Value::BoolValue(v)) => s.serialize_bool(*v),
            Some(Value::IntValue(v)) => s.serialize_i64(*v),
            Some(Value::DoubleValue(v)) => s.serialize_f64(*v),
            Some(Value::BytesValue(v)) => Hex(v).serialize(s),
            Some(Value::ArrayValue(a)) => {
                let mut seq = s.serialize_seq(Some(a.values.len()))?;
                for v in &a.values {
                    seq.serialize_element(&Any(v))?;
                }
                seq.end()
            }
            Some(Value::KvlistValue(kv)) => Attrs(&kv.values).serialize(s),
            // An index into a profiles string table; meaningless outside one.
            Some(Value::StringValueStrindex(i)) => s.serialize_i64(i64::from(*i)),
        }
    }
}

struct Attrs<'a>(&'a [KeyValue]);

impl Serialize for Attrs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for kv in self.0 {
            match &kv.value {
                Some(v) => m.serialize_entry(&kv.key, &Any(v))?,
                None => m.serialize_entry(&kv.key, &())?,
            }
        }
        m.end()
    }
}

struct Events<'a>(&'a [Event]);

impl Serialize for Events<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for e in self.0 {
            seq.serialize_element(&EventLine(e))?;
        }
        seq.end()
    }
}

struct EventLine<'a>(&'a Event);

impl Serialize for EventLine<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("time", &Time(self.0.time_unix_nano))?;
        m.serialize_entry("name", &self.0.name)?;
        if !self.0.attributes.is_empty() {
            m.serialize_entry("attributes", &Attrs(&self.0.attributes))?;
        }
        m.end()
    }
}
