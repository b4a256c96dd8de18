//! How `fargo`'s client commands reach the running app: through the auth-proxy, with
//! an API key (`x-api-key`) or a JWT (`authorization: Bearer`), from flags or environment.

use std::time::Duration;

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// Connection flags shared by every client subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The app's endpoint (the auth-proxy).
    #[arg(long, env = "FARGO_ENDPOINT", default_value = "http://127.0.0.1:50051")]
    pub endpoint: String,
    /// API key, sent as `x-api-key`.
    #[arg(long, env = "FARGO_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// JWT, sent as `authorization: Bearer ...`.
    #[arg(
        long,
        env = "FARGO_TOKEN",
        hide_env_values = true,
        conflicts_with = "api_key"
    )]
    pub token: Option<String>,
    /// Per-call deadline, sent as `grpc-timeout`.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("endpoint `{0}` is not a valid URI: {1}")]
    Endpoint(String, String),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("credential contains characters not allowed in a header")]
    Credential,
}

/// Adds the credential to every call.
#[derive(Debug, Clone)]
pub struct Credential {
    header: Option<(&'static str, AsciiMetadataValue)>,
}

impl Interceptor for Credential {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some((name, value)) = &self.header {
            req.metadata_mut().insert(*name, value.clone());
        }
        Ok(req)
    }
}

pub type AuthChannel = InterceptedService<Channel, Credential>;

impl ClientArgs {
    pub fn credential(&self) -> Result<Credential, ClientError> {
        let header = match (&self.api_key, &self.token) {
            (Some(k), _) => Some((
                "x-api-key",
                MetadataValue::try_from(k.as_str()).map_err(|_| ClientError::Credential)?,
            )),
            (None, Some(t)) => Some((
                "authorization",
                MetadataValue::try_from(format!("Bearer {t}"))
                    .map_err(|_| ClientError::Credential)?,
            )),
            (None, None) => None,
        };
        Ok(Credential { header })
    }

    /// A connected channel that adds the credential; wrap it in any generated client.
    pub async fn connect(&self) -> Result<AuthChannel, ClientError> {
        let endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|e| ClientError::Endpoint(self.endpoint.clone(), e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(self.timeout)
            .tcp_nodelay(true);
        let channel = endpoint.connect().await.map_err(|e| {
            ClientError::Connect(self.endpoint.clone(), format!("{e}: {}", source_chain(&e)))
        })?;
        Ok(InterceptedService::new(channel, self.credential()?))
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}
