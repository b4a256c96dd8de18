//! The shared server over real sockets: health, reflection (v1 and v1alpha), drain,
//! load shedding and deadlines, with the Echo test service as the workload.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fargo_proto::testing::v1::EchoRequest;
use fargo_proto::testing::v1::echo_service_client::EchoServiceClient;
use fargo_runtime::echo::Echo;
use fargo_runtime::{ServerConfig, Services, Shutdown};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

struct Running {
    channel: Channel,
    shutdown: Shutdown,
    task: JoinHandle<Result<(), fargo_runtime::ServeError>>,
    addr: std::net::SocketAddr,
}

async fn start(cfg: ServerConfig) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let services = Services::new()
        .with(Echo::new().server())
        .describe(fargo_proto::FILE_DESCRIPTOR_SET);
    let shutdown = Shutdown::new();
    let wait = shutdown.wait();
    let task =
        tokio::spawn(async move { fargo_runtime::serve(listener, &cfg, services, wait).await });
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Running {
        channel,
        shutdown,
        task,
        addr,
    }
}

fn echo(delay_ms: u32) -> EchoRequest {
    EchoRequest {
        payload: b"hi".to_vec(),
        delay_ms,
        fail_with_code: 0,
        count: 0,
    }
}

#[tokio::test]
async fn health_reports_serving_for_each_service_and_overall() {
    let s = start(ServerConfig::default()).await;
    let mut health = HealthClient::new(s.channel.clone());
    for svc in ["", "fargo.testing.v1.EchoService"] {
        let r = health
            .check(HealthCheckRequest {
                service: svc.into(),
            })
            .await
            .unwrap();
        assert_eq!(
            r.into_inner().status,
            ServingStatus::Serving as i32,
            "service `{svc}`"
        );
    }
    let err = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn reflection_lists_services_in_v1_and_v1alpha() {
    let s = start(ServerConfig::default()).await;
    let v1 = list_v1(s.channel.clone()).await;
    for want in ["fargo.testing.v1.EchoService", "grpc.health.v1.Health"] {
        assert!(
            v1.iter().any(|n| n == want),
            "v1 lists {v1:?}, missing {want}"
        );
    }
    let alpha = list_v1alpha(s.channel.clone()).await;
    assert!(
        alpha.iter().any(|n| n == "fargo.testing.v1.EchoService"),
        "v1alpha lists {alpha:?}"
    );
}

async fn list_v1(channel: Channel) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    match stream.next().await.unwrap().unwrap().message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

async fn list_v1alpha(channel: Channel) -> Vec<String> {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    match stream.next().await.unwrap().unwrap().message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[tokio::test]
async fn drain_reports_not_serving_first_and_finishes_the_call_in_flight() {
    let s = start(ServerConfig {
        grace_period: Duration::from_secs(10),
        ..ServerConfig::default()
    })
    .await;
    let mut watch = HealthClient::new(s.channel.clone())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.next().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );

    let mut client = EchoServiceClient::new(s.channel.clone());
    let in_flight = tokio::spawn(async move { client.echo(echo(700)).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    s.shutdown.trigger();

    // The watcher hears NOT_SERVING before the call in flight has finished.
    let status = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(status.status, ServingStatus::NotServing as i32);
    assert!(
        !in_flight.is_finished(),
        "the slow call should still be running when NOT_SERVING is reported"
    );

    let reply = in_flight
        .await
        .unwrap()
        .expect("the call in flight completes during drain");
    assert_eq!(reply.into_inner().payload, b"hi");
    tokio::time::timeout(Duration::from_secs(5), s.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    // Stopped means stopped: no new connections.
    let again = Channel::from_shared(format!("http://{}", s.addr))
        .unwrap()
        .connect()
        .await;
    assert!(again.is_err(), "server still accepting after drain");
}

#[tokio::test]
async fn grace_period_bounds_the_drain() {
    let s = start(ServerConfig {
        grace_period: Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await;
    let mut client = EchoServiceClient::new(s.channel.clone());
    let slow = tokio::spawn(async move { client.echo(echo(20_000)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.shutdown.trigger();
    // serve() returns after the grace period although the call wants 20 s; the process
    // exiting then cuts what is left.
    tokio::time::timeout(Duration::from_secs(5), s.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!slow.is_finished());
    slow.abort();
}

#[tokio::test]
async fn excess_load_is_shed_with_resource_exhausted_but_health_answers() {
    let s = start(ServerConfig {
        concurrency_limit: 1,
        shed_load: true,
        ..ServerConfig::default()
    })
    .await;
    let mut c1 = EchoServiceClient::new(s.channel.clone());
    let busy = tokio::spawn(async move { c1.echo(echo(600)).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut c2 = EchoServiceClient::new(s.channel.clone());
    let err = c2.echo(echo(0)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("busy"), "{}", err.message());
    let h = HealthClient::new(s.channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(h.into_inner().status, ServingStatus::Serving as i32);
    busy.await.unwrap().unwrap();
    // The slot is free again.
    c2.echo(echo(0)).await.unwrap();
}

#[tokio::test]
async fn server_deadline_bounds_a_slow_call() {
    let s = start(ServerConfig {
        request_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await;
    let mut c = EchoServiceClient::new(s.channel.clone());
    let err = c.echo(echo(3_000)).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("300 ms"), "{}", err.message());
}
