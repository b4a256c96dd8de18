//! Tolerance for AWS-compatible endpoints (`--endpoint-url`) that send numbers where the ECS
//! model says strings: moto answers RunTask and DescribeTasks with `containers[].cpu` (and
//! `memory`) as numbers, which the Rust SDK's strict deserializer rejects outright. Responses
//! from such an endpoint get those fields turned into strings before the SDK parses them.
//! Never used against AWS itself.

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use http_body_util::BodyExt;
use serde_json::Value;

/// Wraps `inner` so responses are patched as described above.
pub fn client(inner: SharedHttpClient) -> SharedHttpClient {
    SharedHttpClient::new(Compat(inner))
}

#[derive(Debug)]
struct Compat(SharedHttpClient);

impl HttpClient for Compat {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(CompatConnector(self.0.http_connector(settings, components)))
    }
}

#[derive(Debug)]
struct CompatConnector(SharedHttpConnector);

impl HttpConnector for CompatConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let inner = self.0.clone();
        HttpConnectorFuture::new(async move {
            let mut resp = inner.call(request).await?;
            let body = resp.take_body();
            let bytes = body.collect().await.map_err(ConnectorError::io)?.to_bytes();
            let patched = patch(&bytes).unwrap_or_else(|| bytes.to_vec());
            *resp.body_mut() = SdkBody::from(patched);
            Ok(resp)
        })
    }
}

/// The body with numeric container sizes as strings, or None when nothing needed changing.
pub fn patch(body: &[u8]) -> Option<Vec<u8>> {
    if !body.windows(12).any(|w| w == b"\"containers\"") {
        return None;
    }
    let mut v: Value = serde_json::from_slice(body).ok()?;
    let mut changed = false;
    walk(&mut v, false, &mut changed);
    if changed {
        serde_json::to_vec(&v).ok()
    } else {
        None
    }
}

fn walk(v: &mut Value, in_containers: bool, changed: &mut bool) {
    match v {
        Value::Object(m) => {
            if in_containers {
                for k in ["cpu", "memory", "memoryReservation"] {
                    if let Some(x) = m.get_mut(k)
                        && x.is_number()
                    {
                        *x = Value::String(x.to_string());
                        *changed = true;
                    }
                }
            }
            for (k, x) in m.iter_mut() {
                let containers = k == "containers";
                if let Value::Array(items) = x {
                    for i in items {
                        walk(i, containers, changed);
                    }
                } else {
                    walk(x, false, changed);
                }
            }
        }
        Value::Array(items) => {
            for i in items {
                walk(i, false, changed);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::patch;

    #[test]
    fn numeric_container_sizes_become_strings() {
        let body =
            br#"{"tasks":[{"cpu":"512","containers":[{"name":"job","cpu":0,"memory":null}]}]}"#;
        let out = String::from_utf8(patch(body).unwrap()).unwrap();
        assert_eq!(
            out,
            r#"{"tasks":[{"containers":[{"cpu":"0","memory":null,"name":"job"}],"cpu":"512"}]}"#
        );
        assert!(patch(br#"{"services":[]}"#).is_none());
    }
}
