//! AWS access for the deploy commands: one `SdkConfig` from the standard chain (environment,
//! profile, IMDS ...), with `--endpoint-url` pointing every client at an AWS-compatible server
//! such as moto, and errors that name the call that failed in one line.

pub mod compat;
pub mod conv;
pub mod ecs_input;
pub mod ecs_output;
pub mod json;

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_ecs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

/// Where the AWS calls go; shared by every deploy subcommand.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AwsArgs {
    /// Send every AWS call to this endpoint instead of AWS (e.g. a moto server).
    #[arg(long, env = "FARGO_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// AWS region; defaults to the standard chain (AWS_REGION, profile).
    #[arg(long)]
    pub region: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error("no AWS region: pass --region or set AWS_REGION (or a region in the AWS profile)")]
    NoRegion,
    #[error("no AWS credentials: {0} (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE)")]
    NoCredentials(String),
    #[error("{call}: {message}")]
    Call { call: &'static str, message: String },
}

impl AwsError {
    /// One line naming the call: the service's error code and message, or the transport
    /// failure (unreachable endpoint, timeout) without the SDK's nested debug output.
    pub fn call<E>(call: &'static str, e: SdkError<E>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let message = match &e {
            SdkError::ServiceError(se) => {
                let err = se.err();
                match (err.code(), err.message()) {
                    (Some(c), Some(m)) => format!("{c}: {m}"),
                    (Some(c), None) => c.to_owned(),
                    // No AWS error body (a proxy's or a crashed server's page): the status.
                    _ => format!(
                        "HTTP {} without an AWS error code: {}",
                        se.raw().status().as_u16(),
                        one_line(&DisplayErrorContext(err).to_string())
                    ),
                }
            }
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
                format!(
                    "endpoint unreachable: {}",
                    one_line(&DisplayErrorContext(&e).to_string())
                )
            }
            _ => one_line(&DisplayErrorContext(&e).to_string()),
        };
        Self::Call { call, message }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The three clients deploy uses, built from one configuration.
#[derive(Debug, Clone)]
pub struct Clients {
    pub ecs: aws_sdk_ecs::Client,
    pub scaling: aws_sdk_applicationautoscaling::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub region: String,
}

impl Clients {
    /// Loads the standard chain and checks region and credentials up front, so a missing
    /// one is reported before any call is made rather than in the middle of a deploy.
    pub async fn load(args: &AwsArgs) -> Result<Self, AwsError> {
        Self::load_with(args, None).await
    }

    /// As `load`, with fixed credentials instead of the chain's (tests, tools).
    pub async fn load_with(
        args: &AwsArgs,
        credentials: Option<aws_credential_types::Credentials>,
    ) -> Result<Self, AwsError> {
        // rustls on ring: the SDK's default TLS stack (aws-lc) needs a long C build.
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            // Fail fast on an unreachable endpoint instead of the SDK's long defaults.
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(30))
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(3));
        if let Some(url) = &args.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        // Only another endpoint (moto, LocalStack ...) needs the compatibility layer.
        let http = if args.endpoint_url.is_some() || std::env::var_os("AWS_ENDPOINT_URL").is_some()
        {
            compat::client(http)
        } else {
            http
        };
        loader = loader.http_client(http);
        if let Some(r) = &args.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        if let Some(c) = credentials {
            loader = loader.credentials_provider(c);
        }
        let conf = loader.load().await;
        let region = conf.region().ok_or(AwsError::NoRegion)?.to_string();
        let creds = conf
            .credentials_provider()
            .ok_or_else(|| AwsError::NoCredentials("no credentials provider".into()))?;
        creds
            .provide_credentials()
            .await
            .map_err(|e| AwsError::NoCredentials(one_line(&DisplayErrorContext(&e).to_string())))?;
        Ok(Self {
            ecs: aws_sdk_ecs::Client::new(&conf),
            scaling: aws_sdk_applicationautoscaling::Client::new(&conf),
            logs: aws_sdk_cloudwatchlogs::Client::new(&conf),
            region,
        })
    }
}
