//! Test support: starts the real servers tests need on 127.0.0.1 and cleans up after.
//!
//! Nothing here is assumed to be running: each helper starts its own process on a
//! free port and kills it on drop, so tests stay independent and parallel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound and released; races are unlikely, not impossible).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Runs the system's `ffmpeg` CLI quietly, overwriting outputs; the error carries its stderr.
pub fn ffmpeg(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .map_err(|e| format!("ffmpeg CLI not found ({e}): apt-get install ffmpeg"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ffmpeg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A small H.264/MP4 test clip: ffmpeg's `testsrc2` pattern (it moves, so every frame
/// differs), `size` as "WxH", 25 frames/s, a keyframe every `gop` frames.
pub fn h264_clip(path: &std::path::Path, size: &str, seconds: u32, gop: u32) -> Result<(), String> {
    let src = format!("testsrc2=size={size}:rate=25:duration={seconds}");
    let gop = gop.to_string();
    let path = path.to_string_lossy();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &src,
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        &gop,
        "-pix_fmt",
        "yuv420p",
        &path,
    ])
}

/// A `moto` AWS-compatible server (`pip install 'moto[server]'`) on a free loopback port.
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    /// Starts `python3 -m moto.server`; panics with the install hint if moto is missing.
    pub fn start() -> Moto {
        Self::start_with_env(&[])
    }

    pub fn start_with_env(env: &[(&str, &str)]) -> Moto {
        let port = free_port();
        let mut cmd = Command::new("python3");
        cmd.args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .expect("python3 not found: install Python 3 and `pip install 'moto[server]'`");
        let mut moto = Moto { child, port };
        if !wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(30),
        ) {
            let status = moto.child.try_wait().ok().flatten();
            panic!(
                "moto server did not start on port {port} (exit: {status:?}); install it with `pip install 'moto[server]'`"
            );
        }
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Environment that points the AWS SDK's standard chain at this server.
    pub fn aws_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
        ]
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
