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

    /// [`Moto::aws_env`] with owned names, as `Storage::with_env` takes it.
    pub fn aws_env_owned(&self) -> Vec<(String, String)> {
        self.aws_env()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    /// One plain HTTP/1.1 request to the server; the whole response as text.
    fn request(&self, head: &str, body: &str) -> std::io::Result<String> {
        use std::io::{Read, Write};
        let req = format!(
            "{head}\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        );
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.write_all(req.as_bytes())?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        Ok(resp)
    }

    /// Creates S3 buckets (moto takes an unsigned CreateBucket), retrying while the
    /// server is still warming up, for up to a minute.
    pub fn create_buckets(&self, buckets: &[&str]) {
        let end = Instant::now() + Duration::from_secs(60);
        for b in buckets {
            loop {
                match self.request(&format!("PUT /{b} HTTP/1.1"), "") {
                    Ok(r) if r.starts_with("HTTP/1.1 200") => break,
                    r if Instant::now() > end => panic!("CreateBucket {b} on moto: {r:?}"),
                    _ => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        }
    }

    /// The values of `<tag>` in an EC2 query answer (e.g. moto's default VPC's subnet
    /// or security group ids for `DescribeSubnets`/`subnetId`).
    pub fn ec2_ids(&self, action: &str, tag: &str) -> Vec<String> {
        let resp = self
            .request(
                "POST / HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                 Authorization: AWS4-HMAC-SHA256 Credential=testing/20261127/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0",
                &format!("Action={action}&Version=2016-11-15"),
            )
            .unwrap();
        let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
        resp.split(&open)
            .skip(1)
            .filter_map(|r| r.split(&close).next())
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
