//! Bad configuration stops every sidecar before it binds a port, with exit code 2 and a
//! message naming the key and where it came from.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

const SIDECARS: [&str; 4] = ["logging", "thumbnail", "coin-value", "auth-proxy"];

fn run(sidecar: &str, config: Option<&std::path::Path>, env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fargo"));
    cmd.args(["sidecar", sidecar, "serve"]);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unknown_key_in_file_is_named_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sidecar.yaml");
    // A free port: if the sidecar bound before validating, it would block here instead.
    let port = fargo_testkit::free_port();
    std::fs::write(
        &path,
        format!("server:\n  listen: 127.0.0.1:{port}\n  grace_periods: 5s\n"),
    )
    .unwrap();
    for s in SIDECARS {
        let (code, err) = run(s, Some(&path), &[]);
        assert_eq!(code, 2, "{s}: {err}");
        assert!(
            err.contains("grace_periods") && err.contains("sidecar.yaml"),
            "{s}: {err}"
        );
    }
}

#[test]
fn wrong_type_from_the_environment_is_named_with_the_variable() {
    for s in SIDECARS {
        let (code, err) = run(s, None, &[("FARGO_SERVER__MAX_MESSAGE_BYTES", "big")]);
        assert_eq!(code, 2, "{s}: {err}");
        assert!(
            err.contains("server.max_message_bytes")
                && err.contains("FARGO_SERVER__MAX_MESSAGE_BYTES"),
            "{s}: {err}"
        );
    }
}

#[test]
fn missing_config_file_is_named() {
    for s in SIDECARS {
        let (code, err) = run(
            s,
            Some(std::path::Path::new("/nonexistent/fargo.yaml")),
            &[],
        );
        assert_eq!(code, 2, "{s}: {err}");
        assert!(
            err.contains("/nonexistent/fargo.yaml") && err.contains("not found"),
            "{s}: {err}"
        );
    }
}

#[test]
fn unknown_section_from_the_environment_is_rejected() {
    for s in SIDECARS {
        let (code, err) = run(s, None, &[("FARGO_SERVR__LISTEN", "127.0.0.1:1")]);
        assert_eq!(code, 2, "{s}: {err}");
        assert!(err.contains("servr"), "{s}: {err}");
    }
}
