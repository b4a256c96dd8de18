//! Shutdown signals. ECS sends SIGTERM and, `stopTimeout` later, SIGKILL; people press Ctrl-C.

use std::future::Future;

use tokio_util::sync::CancellationToken;

/// A cloneable "stop now" flag that is also a future.
#[derive(Clone, Debug, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn trigger(&self) {
        self.0.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves once [`Shutdown::trigger`] has been called.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + use<> {
        self.0.clone().cancelled_owned()
    }

    /// A shutdown triggered by the first SIGTERM or SIGINT.
    pub fn on_signals() -> Self {
        let s = Self::new();
        let t = s.clone();
        tokio::spawn(async move {
            let name = signal().await;
            tracing::info!(signal = name, "shutdown requested");
            t.trigger();
        });
        s
    }
}

/// Waits for SIGTERM or SIGINT and names it.
pub async fn signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            // Without signal handlers the process can still be killed; never resolve.
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "ctrl-c"
    }
}
